package peers

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Run runs a component's Run(ctx) on its own goroutine until the returned
// stop is called or the test ends. stop cancels ctx and fails the test if
// Run returns an error or has not returned within bound. It is safe to
// call more than once.
func Run(t testing.TB, bound time.Duration, run func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(bound):
				t.Errorf("Run did not return within %v of cancel", bound)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
