package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// freePort returns a loopback TCP port that was free a moment ago, for the
// gateway's management API (the harness scrapes its /metrics).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// scrapeBuffer reads the buffer's counters from the gateway's /metrics:
// commits (write transactions that stored batches) and batches appended.
func scrapeBuffer(ctx context.Context, port int) (commits, appended float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("metrics: %s", resp.Status)
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "fieldgate_buffer_commits_total":
			commits, err = strconv.ParseFloat(strings.TrimSpace(v), 64)
			found++
		case "fieldgate_buffer_appended_total":
			appended, err = strconv.ParseFloat(strings.TrimSpace(v), 64)
			found++
		}
		if err != nil {
			return 0, 0, fmt.Errorf("metrics: %s: %w", name, err)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if found < 2 {
		return 0, 0, fmt.Errorf("metrics: buffer counters not found")
	}
	return commits, appended, nil
}

// syscallCounter counts the gateway's fdatasync calls over the steady
// window with `perf stat` on the syscall tracepoint (counted in the kernel,
// nothing is traced per call). It is nil when perf is missing or cannot
// attach; the result then reports 0.
type syscallCounter struct {
	cmd *exec.Cmd
	out string
}

const fdatasyncEvent = "syscalls:sys_enter_fdatasync"

func startSyscallCounter(pid int, dir string) *syscallCounter {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return nil
	}
	out := dir + "/perf-fdatasync.csv"
	cmd := exec.Command(perf, "stat", "-x", ",", "-o", out, "-e", fdatasyncEvent, "-p", strconv.Itoa(pid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil
	}
	return &syscallCounter{cmd: cmd, out: out}
}

// stop ends the count and returns it; -1 when perf gave none.
func (c *syscallCounter) stop() int64 {
	if c == nil {
		return -1
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
		return -1
	}
	b, err := os.ReadFile(c.out)
	if err != nil {
		return -1
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		f := strings.Split(string(l), ",")
		if len(f) >= 3 && f[2] == fdatasyncEvent {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}
