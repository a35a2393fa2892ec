package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: line %q is not JSON: %v", path, sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func TestEntryLine(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 678_900_000, time.FixedZone("CET", 3600))
	for _, c := range []struct {
		e    Entry
		want string
	}{{
		Entry{Time: at, Event: EventWrite, Source: "json", Topic: "fieldgate/gw/press-1/set", ID: "abc", Device: "press-1",
			Tag: "setpoint", Old: telemetry.Int(40), New: telemetry.Float(42.5), Result: "ok", Duration: 12_345_678 * time.Nanosecond},
		`{"time":"2025-01-02T02:04:05.678Z","event":"write","source":"json","topic":"fieldgate/gw/press-1/set","id":"abc","device":"press-1","tag":"setpoint","old":40,"new":42.5,"result":"ok","duration_ms":12.35}`,
	}, {
		Entry{Time: at, Event: EventWrite, Device: "d", Tag: "t", New: telemetry.String("a\"b\n"), Result: "out_of_range", Reason: "x < y"},
		`{"time":"2025-01-02T02:04:05.678Z","event":"write","device":"d","tag":"t","new":"a\"b\n","result":"out_of_range","reason":"x \u003c y"}`,
	}, {
		Entry{Time: at, Event: EventBufferDrop, Device: "d", Records: 4, Points: 120},
		`{"time":"2025-01-02T02:04:05.678Z","event":"buffer_drop","device":"d","records":4,"points":120}`,
	}, {
		Entry{Time: at, Event: EventWrite, Old: telemetry.Bool(true), New: telemetry.Uint(1 << 63)},
		`{"time":"2025-01-02T02:04:05.678Z","event":"write","old":true,"new":9223372036854775808}`,
	}} {
		got := string(appendEntry(nil, &c.e))
		if got != c.want+"\n" {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
	long := strings.Repeat("é", MaxString)
	line := appendEntry(nil, &Entry{Time: at, Event: EventWrite, Reason: long})
	var m map[string]string
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatal(err)
	}
	if r := m["reason"]; len(r) > MaxString+len("…") || !strings.HasSuffix(r, "…") || !strings.HasPrefix(r, "éé") {
		t.Errorf("long reason kept as %d bytes: %q", len(r), r)
	}
}

// TestRotationBoundsTotalSize writes far more than the bound and checks
// that the files rotate in order, none passes MaxBytes, only Files old
// ones are kept, and the newest lines are the ones kept.
func TestRotationBoundsTotalSize(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "audit.log")
	opts := Options{MaxBytes: MinBytes, Files: 3}
	l, err := Open(path, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000 // about 100 bytes each: 500 KB, eight files' worth
	for i := range n {
		if err := l.Write(Entry{Event: EventWrite, Device: "press-1", Tag: "setpoint", ID: fmt.Sprint(i), New: telemetry.Int(int64(i)), Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(path + "*")
	if len(files) != opts.Files+1 {
		t.Fatalf("files %v, want %d", files, opts.Files+1)
	}
	var total int64
	last := n
	for i := 0; i <= opts.Files; i++ {
		name := path
		if i > 0 {
			name = fmt.Sprintf("%s.%d", path, i)
		}
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > opts.MaxBytes {
			t.Errorf("%s has %d bytes, above %d", name, st.Size(), opts.MaxBytes)
		}
		if i > 0 && st.Size() < opts.MaxBytes*9/10 {
			t.Errorf("%s has only %d bytes: rotated too early", name, st.Size())
		}
		total += st.Size()
		lines := readLines(t, name)
		// Newest file first: ids count down across files, and each file's
		// lines are in order and end where the next newer one starts.
		end := lines[len(lines)-1]["id"].(string)
		if end != fmt.Sprint(last-1) {
			t.Errorf("%s ends with id %s, want %d", name, end, last-1)
		}
		last -= len(lines)
	}
	if total > int64(opts.Files+1)*opts.MaxBytes {
		t.Errorf("total %d bytes above the bound", total)
	}
}

// TestReopenContinuesTheFile appends to an existing log and counts its
// size toward the rotation.
func TestReopenContinuesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(strings.Repeat("x", MinBytes-10)+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, Options{MaxBytes: MinBytes, Files: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Write(Entry{Event: EventReload}); err != nil {
		t.Fatal(err)
	}
	if lines := readLines(t, path); len(lines) != 1 || lines[0]["event"] != "reload" {
		t.Errorf("after rotation the file holds %v", lines)
	}
	if b, _ := os.ReadFile(path + ".1"); len(b) != MinBytes-9 {
		t.Errorf("rotated file has %d bytes, want the old %d", len(b), MinBytes-9)
	}
}

// TestWriteFailureIsReportedAndRecovers blocks the rotation (audit.log.1
// is a folder that cannot be removed): the entries are lost and reported,
// the file does not grow past its bound, and writing works again once the
// rotation can go through.
func TestWriteFailureIsReportedAndRecovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Options{MaxBytes: MinBytes, Files: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	big := Entry{Event: EventWrite, Reason: strings.Repeat("r", MaxString)}
	for l.size < MinBytes-400 {
		if err := l.Write(big); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(path+".1", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_ = l.Write(big)
	}
	if l.Err() == nil || l.Errors() < 2 {
		t.Fatalf("a blocked rotation was not reported (err %v, errors %d)", l.Err(), l.Errors())
	}
	if st, _ := os.Stat(path); st.Size() > MinBytes {
		t.Errorf("the file grew to %d bytes while it could not rotate", st.Size())
	}
	if err := os.RemoveAll(path + ".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(big); err != nil {
		t.Fatalf("write after the rotation is possible again: %v", err)
	}
	if l.Err() != nil {
		t.Errorf("Err still %v after a good write", l.Err())
	}
	if lines := readLines(t, path); len(lines) != 1 {
		t.Errorf("new file has %d lines, want 1", len(lines))
	}
}

func TestConcurrentWritesKeepWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Options{MaxBytes: 1 << 20, Files: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				_ = l.Write(Entry{Event: EventWrite, Device: fmt.Sprint("d", g), New: telemetry.Int(int64(i))})
			}
		})
	}
	wg.Wait()
	_ = l.Close()
	if lines := readLines(t, path); len(lines) != 800 {
		t.Errorf("%d lines, want 800", len(lines))
	}
	if err := l.Write(Entry{Event: EventWrite}); err == nil {
		t.Error("Write after Close succeeded")
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []Options{{MaxBytes: 1000, Files: 1}, {MaxBytes: MinBytes, Files: 0}} {
		if _, err := Open(filepath.Join(dir, "a.log"), o, nil); err == nil {
			t.Errorf("Open with %+v succeeded", o)
		}
	}
}
