package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/fieldgate/fieldgate/sim"
)

// farmEnv, set to "1" in a process's environment, makes that process the
// device farm instead of the harness (so a test binary can be re-exec'd too).
const farmEnv = "FIELDBENCH_FARM"

// farmHello is the first line the farm prints: one port per device.
type farmHello struct {
	Ports []int `json:"ports"`
}

// farmCounts answers a "requests" line on the farm's stdin.
type farmCounts struct {
	Requests []uint64 `json:"requests"`
}

// runFarm serves n simulated Modbus TCP devices of m holding registers on
// 127.0.0.1, prints their ports as one JSON line, answers "requests" lines
// on stdin with the request counters, and exits when stdin closes or after
// maxLife.
func runFarm(n, m int, maxLife time.Duration, stdin io.Reader, stdout io.Writer) error {
	srvs := make([]*sim.ModbusServer, 0, n)
	defer func() {
		for _, s := range srvs {
			_ = s.Close()
		}
	}()
	var hello farmHello
	for i := range n {
		s := sim.NewModbus(sim.ModbusOptions{})
		regs := make([]uint16, m)
		for r := range regs {
			regs[r] = uint16(r*37 + i)
		}
		s.SetHolding(0, regs...)
		if err := s.Listen("127.0.0.1:0"); err != nil {
			return fmt.Errorf("farm: device %d: %w", i, err)
		}
		srvs = append(srvs, s)
		var port int
		if _, err := fmt.Sscanf(s.Addr()[strings.LastIndexByte(s.Addr(), ':')+1:], "%d", &port); err != nil {
			return fmt.Errorf("farm: address %q: %w", s.Addr(), err)
		}
		hello.Ports = append(hello.Ports, port)
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(hello); err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.NewTimer(maxLife)
	defer deadline.Stop()
	for {
		select {
		case <-deadline.C:
			return fmt.Errorf("farm: lifetime %s over", maxLife)
		case l, ok := <-lines:
			if !ok {
				return nil
			}
			if strings.TrimSpace(l) != "requests" {
				continue
			}
			var c farmCounts
			for _, s := range srvs {
				c.Requests = append(c.Requests, s.Requests())
			}
			if err := enc.Encode(c); err != nil {
				return err
			}
		}
	}
}

// farm is the harness's handle on the farm process.
type farm struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	ports []int
}

// startFarm re-executes this binary as the farm.
func startFarm(ctx context.Context, n, m int, maxLife time.Duration) (*farm, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "farm", "-n", fmt.Sprint(n), "-m", fmt.Sprint(m), "-max-life", maxLife.String())
	cmd.Env = append(os.Environ(), farmEnv+"=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start farm: %w", err)
	}
	f := &farm{cmd: cmd, in: in, out: bufio.NewReader(out)}
	var hello farmHello
	if err := f.readJSON(&hello); err != nil {
		f.stop()
		return nil, fmt.Errorf("farm hello: %w", err)
	}
	if len(hello.Ports) != n {
		f.stop()
		return nil, fmt.Errorf("farm: %d ports for %d devices", len(hello.Ports), n)
	}
	f.ports = hello.Ports
	return f, nil
}

func (f *farm) readJSON(v any) error {
	line, err := f.out.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// requests returns the sum of the devices' request counters.
func (f *farm) requests() (uint64, error) {
	if _, err := io.WriteString(f.in, "requests\n"); err != nil {
		return 0, err
	}
	var c farmCounts
	if err := f.readJSON(&c); err != nil {
		return 0, err
	}
	var sum uint64
	for _, r := range c.Requests {
		sum += r
	}
	return sum, nil
}

func (f *farm) stop() {
	_ = f.in.Close()
	done := make(chan struct{})
	go func() { _ = f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = f.cmd.Process.Kill()
		<-done
	}
}
