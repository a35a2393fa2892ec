// Package faults is fieldgate's fault-injection suite: it breaks the broker,
// the network, the gateway process and the disk while readings flow, and
// checks by reading identity (device, tag, timestamp) and by sequence number
// what arrived. See docs/durability.md for the scenarios, their pass
// criteria and how to run the long versions.
package faults
