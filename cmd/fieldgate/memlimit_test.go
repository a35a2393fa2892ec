package main

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestLimitMemoryDefault(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	for _, env := range []string{"GOMEMLIMIT", "GOGC"} {
		if v, ok := os.LookupEnv(env); ok {
			t.Setenv(env, v) // restored after the test
			if err := os.Unsetenv(env); err != nil {
				t.Fatal(err)
			}
		}
	}
	settle := limitMemory()
	if got := debug.SetMemoryLimit(-1); got != defaultMemoryLimit {
		t.Fatalf("limit %d, want %d", got, defaultMemoryLimit)
	}
	keep := make([]byte, defaultMemoryLimit) // live: the limit must make room
	settle()
	if got := debug.SetMemoryLimit(-1); got < 2*int64(len(keep)) {
		t.Errorf("after settle with %d bytes live the limit is %d, want at least twice that", len(keep), got)
	}
	keep[len(keep)-1] = 1
}

func TestLimitMemoryLeavesSettingsAlone(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	for _, env := range []string{"GOMEMLIMIT", "GOGC"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, "100")
			limitMemory()()
			if got := debug.SetMemoryLimit(-1); got != orig {
				t.Errorf("%s set: limit changed from %d to %d", env, orig, got)
			}
		})
	}
}
