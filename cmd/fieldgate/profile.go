package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// profileEnv names a file that `fieldgate run` writes a CPU profile to,
// from start to a clean stop; memProfileEnv one that it writes a heap
// profile to at a clean stop (allocations since start and memory in use
// then). They are for the load harness and for people chasing a cost;
// unset, they do nothing.
const (
	profileEnv    = "FIELDGATE_CPUPROFILE"
	memProfileEnv = "FIELDGATE_MEMPROFILE"
)

// startProfile starts the profiles FIELDGATE_CPUPROFILE and
// FIELDGATE_MEMPROFILE ask for and returns the function that stops and
// writes them; call it once, at the start of run, and defer the result.
func startProfile(stderr io.Writer) (stop func()) {
	stopCPU := startCPUProfile(stderr)
	return func() {
		stopCPU()
		writeMemProfile(stderr)
	}
}

func startCPUProfile(stderr io.Writer) (stop func()) {
	path := os.Getenv(profileEnv)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate: %s: %v\n", profileEnv, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(stderr, "fieldgate: %s: %v\n", profileEnv, err)
		_ = f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// writeMemProfile writes the heap profile FIELDGATE_MEMPROFILE asks for.
func writeMemProfile(stderr io.Writer) {
	path := os.Getenv(memProfileEnv)
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate: %s: %v\n", memProfileEnv, err)
	}
}
