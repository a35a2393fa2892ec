package buffer

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv names the file the re-executed test binary appends to.
const crashChildEnv = "FIELDGATE_BUFFER_CRASH_CHILD"

// crashChild appends batches in a loop and prints "seq <n> <batch id>"
// after each Append returned (the record is committed), and "ack <n>"
// after each Ack returned. It is killed by the parent; it gives up by
// itself after a minute so it cannot be orphaned forever.
func crashChild(path string) {
	q, err := Open(path, Options{}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	deadline := time.Now().Add(time.Minute)
	for id := int(q.Stats().LastSeq); time.Now().Before(deadline); id++ {
		if err := q.Append(context.Background(), batch("crash", id, 1+id%30)); err != nil {
			fmt.Fprintln(os.Stderr, "append:", err)
			os.Exit(2)
		}
		seq := q.Stats().LastSeq // the only appender: this is our record
		fmt.Fprintf(w, "seq %d %d\n", seq, id)
		_ = w.Flush()
		if seq%100 == 0 {
			if err := q.Ack(seq - 50); err != nil {
				fmt.Fprintln(os.Stderr, "ack:", err)
				os.Exit(2)
			}
			fmt.Fprintf(w, "ack %d\n", seq-50)
			_ = w.Flush()
		}
	}
	os.Exit(3)
}

func TestQueueSurvivesSIGKILL(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "buffer.db")
	var lastSeq uint64
	for round := range 3 {
		committed, acked := runCrashChild(t, path, 150+round*70)
		q, err := Open(path, Options{}, nil)
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		recs, err := q.Peek(0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		have := map[uint64]int{}
		for i, r := range recs {
			if i > 0 && r.Seq <= recs[i-1].Seq {
				t.Fatalf("round %d: seq %d after %d", round, r.Seq, recs[i-1].Seq)
			}
			have[r.Seq] = batchID(r.Batch)
		}
		// The child prints right after each commit, so at most one commit
		// and the Ack that may follow it (up to seq-50 when seq%100 == 0)
		// are unreported.
		maxSeq := committed[len(committed)-1][0]
		mayBeAcked := acked
		for _, s := range []uint64{maxSeq, maxSeq + 1} {
			if s%100 == 0 {
				mayBeAcked = max(mayBeAcked, s-50)
			}
		}
		for _, c := range committed {
			seq, id := c[0], int(c[1])
			got, ok := have[seq]
			switch {
			case seq <= acked && ok:
				t.Fatalf("round %d: seq %d was acked but is still stored", round, seq)
			case seq <= mayBeAcked:
			case !ok:
				t.Fatalf("round %d: committed seq %d (batch %d) is missing after SIGKILL; %d records stored",
					round, seq, id, len(recs))
			case got != id:
				t.Fatalf("round %d: seq %d holds batch %d, want %d", round, seq, got, id)
			}
		}
		st := q.Stats()
		if st.LastSeq < maxSeq || st.LastSeq <= lastSeq || st.DroppedRecords != 0 {
			t.Fatalf("round %d: Stats after reopen %+v; last reported seq %d, previous round %d",
				round, st, maxSeq, lastSeq)
		}
		lastSeq = st.LastSeq
		t.Logf("round %d: child reported %d commits up to seq %d; reopened with %d records, last seq %d",
			round, len(committed), maxSeq, st.Records, st.LastSeq)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// runCrashChild runs crashChild on path, SIGKILLs it once it reported n
// commits, and returns the (seq, batch id) pairs it reported and the
// highest ack it reported.
func runCrashChild(t *testing.T, path string, n int) (committed [][2]uint64, acked uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestQueueSurvivesSIGKILL$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	timeout := time.After(30 * time.Second)
	killed := false
	for !killed {
		select {
		case line, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("child exited before it was killed: %s", stderr.String())
			}
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "seq":
				seq, _ := strconv.ParseUint(f[1], 10, 64)
				id, _ := strconv.ParseUint(f[2], 10, 64)
				committed = append(committed, [2]uint64{seq, id})
			case len(f) == 2 && f[0] == "ack":
				acked, _ = strconv.ParseUint(f[1], 10, 64)
			}
			if len(committed) >= n {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		case <-timeout:
			_ = cmd.Process.Kill()
			t.Fatalf("child reported %d of %d commits in 30s: %s", len(committed), n, stderr.String())
		}
	}
	// Lines printed after the kill signal was sent still describe commits.
	for line := range lines {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "seq" {
			seq, _ := strconv.ParseUint(f[1], 10, 64)
			id, _ := strconv.ParseUint(f[2], 10, 64)
			committed = append(committed, [2]uint64{seq, id})
		} else if len(f) == 2 && f[0] == "ack" {
			acked, _ = strconv.ParseUint(f[1], 10, 64)
		}
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}
	return committed, acked
}
