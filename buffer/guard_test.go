package buffer

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestQueueBboltPanicBecomesError: a panic inside a bbolt transaction (as
// bbolt raises on some damaged files) comes back as ErrDamaged, the
// transaction is rolled back, and the queue keeps working.
func TestQueueBboltPanicBecomesError(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "b.db"), Options{}, nil)
	mustAppend(t, q, batch("a", 1, 2))
	err := q.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(recordsBucket).Delete(make([]byte, 8)); err != nil {
			return err
		}
		panic("page 12 already freed")
	})
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("update after a panic: %v, want ErrDamaged", err)
	}
	if err := q.view(func(*bolt.Tx) error { panic("invalid page type") }); !errors.Is(err, ErrDamaged) {
		t.Fatalf("view after a panic: %v, want ErrDamaged", err)
	}
	mustAppend(t, q, batch("a", 2, 2))
	if got := peekSeqs(t, q, 0, 10); len(got) != 2 {
		t.Fatalf("after the recovered panics the queue holds %v, want 2 records", got)
	}
}
