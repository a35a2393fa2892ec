package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// profileEnv names a file that `fieldgate run` writes a CPU profile to,
// from start to a clean stop. It is for the load harness and for people
// chasing a cost; unset, it does nothing.
const profileEnv = "FIELDGATE_CPUPROFILE"

// startProfile starts the CPU profile FIELDGATE_CPUPROFILE asks for and
// returns the function that stops and writes it; call it once, at the
// start of run, and defer the result.
func startProfile(stderr io.Writer) (stop func()) {
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
