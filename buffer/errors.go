package buffer

import "errors"

// ErrLocked is returned by Open when another process (or another Queue in
// this process) holds the file open and the lock was not released within
// the open timeout.
var ErrLocked = errors.New("locked by another opener")

// ErrClosed is returned by Append, Peek, Wait and Ack after Close.
var ErrClosed = errors.New("buffer is closed")

// ErrTooLarge is returned by Append for a batch whose encoding alone is
// larger than Options.MaxBytes; such a batch can never be stored.
var ErrTooLarge = errors.New("batch larger than the buffer bound")

// errCorrupt marks a file that failed the structural check at open.
var errCorrupt = errors.New("corrupt buffer file")

// ErrDamaged wraps the error a read or write returns when bbolt finds the
// file damaged in a way the check at Open did not catch (it would otherwise
// panic and take the gateway down). The operation fails and is counted as
// a write failure; the records it concerned stay where they were. Restart
// the gateway to have the file checked and, if need be, moved aside.
var ErrDamaged = errors.New("buffer file is damaged")
