//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package buffer

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// errLockTimeout is returned by lockFile when the lock stayed taken.
var errLockTimeout = errors.New("lock timeout")

// lockFile takes the exclusive flock bbolt uses, retrying for up to timeout.
func lockFile(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return errLockTimeout
		}
		time.Sleep(50 * time.Millisecond) // the same retry period bbolt uses
	}
}

func unlockFile(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
