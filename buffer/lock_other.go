//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package buffer

import (
	"errors"
	"os"
	"time"
)

var errLockTimeout = errors.New("lock timeout")

// lockFile is a no-op where flock is unavailable; bbolt's own lock still
// guards the file once it is opened.
func lockFile(*os.File, time.Duration) error { return nil }

func unlockFile(*os.File) {}
