package buffer

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// update runs fn in a bbolt write transaction. bbolt panics on some damaged
// files (a page freed twice, a page of the wrong type); update turns that
// panic into an error wrapping ErrDamaged, after bbolt has rolled the
// transaction back, so one damaged page cannot stop the gateway.
func (q *Queue) update(fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("buffer %s: %w: %v", q.path, ErrDamaged, r)
		}
	}()
	q.dbmu.RLock()
	defer q.dbmu.RUnlock()
	return q.db.Update(fn)
}

// view is update for read transactions.
func (q *Queue) view(fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("buffer %s: %w: %v", q.path, ErrDamaged, r)
		}
	}()
	q.dbmu.RLock()
	defer q.dbmu.RUnlock()
	return q.db.View(fn)
}
