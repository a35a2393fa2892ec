// Package e2e holds fieldgate's end-to-end tests: the whole gateway against
// simulated Modbus devices and a real Mosquitto broker on loopback, with the
// uplink cut, the broker missing, and the gateway SIGKILLed. It has no code
// outside its tests.
package e2e
