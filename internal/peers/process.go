package peers

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer that a process or logger may write while
// the test reads it. It is safe for concurrent use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Lines returns everything written so far, one element a line.
func (s *SyncBuffer) Lines() []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader([]byte(s.String())))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// fieldgate is the binary FieldgateBinary built, once per test binary.
var fieldgate struct {
	sync.Once
	path string
	err  error
	out  []byte
}

// FieldgateBinary builds cmd/fieldgate once per test binary, into a
// temporary folder, and returns its path. A failed build fails every test
// that asks for it.
func FieldgateBinary(t testing.TB) string {
	t.Helper()
	fieldgate.Do(func() {
		dir, err := os.MkdirTemp("", "fieldgate-test-")
		if err != nil {
			fieldgate.err = err
			return
		}
		fieldgate.path = filepath.Join(dir, "fieldgate")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", fieldgate.path, "github.com/fieldgate/fieldgate/cmd/fieldgate")
		fieldgate.out, fieldgate.err = cmd.CombinedOutput()
	})
	if fieldgate.err != nil {
		t.Fatalf("build fieldgate: %v\n%s", fieldgate.err, fieldgate.out)
	}
	return fieldgate.path
}

// Process is a program running as a child process of the test, with its
// stdout and stderr in Out. If it is still running when the test ends it
// is killed; if the test failed, its output is logged.
type Process struct {
	Out  *SyncBuffer
	name string
	cmd  *exec.Cmd
}

// StartProcess starts the program at path with args.
func StartProcess(t testing.TB, path string, args ...string) *Process {
	t.Helper()
	p := &Process{Out: new(SyncBuffer), name: filepath.Base(path)}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.Out, p.Out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.Out.String())
		}
	})
	return p
}

// StartFieldgate starts the fieldgate binary (see FieldgateBinary) with
// args.
func StartFieldgate(t testing.TB, args ...string) *Process {
	t.Helper()
	return StartProcess(t, FieldgateBinary(t), args...)
}

// Stop sends sig and waits up to d for the process to exit, and returns
// its state. If it has not exited by then, it is killed and the test
// fails.
func (p *Process) Stop(t testing.TB, sig syscall.Signal, d time.Duration) *os.ProcessState {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
		return p.cmd.ProcessState
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not exit within %v of %v", p.name, d, sig)
		return nil
	}
}
