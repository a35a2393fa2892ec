// Package peers holds the test peers that fieldgate's end-to-end and
// fault-injection suites share: a real Mosquitto broker on a free loopback
// port that a test can SIGKILL and start again, a TCP proxy that cuts,
// refuses, black-holes or slows the link between the gateway and its broker,
// the fieldgate binary built once per test binary and run as a child
// process, and the small helpers around them (FreePort, CheckFor,
// SyncBuffer).
//
// It is imported only by tests (its functions take a testing.TB and fail or
// skip the test themselves); no package of the gateway imports it. Every
// peer listens on 127.0.0.1 and is stopped by t.Cleanup.
//
// A test whose peer is missing skips with a message naming what to install;
// with CI set in the environment it fails instead.
package peers
