// Package config loads, defaults and validates the gateway's YAML
// configuration file.
//
// Load reads one file and returns a *Config with every default resolved,
// secrets (${ENV} in mqtt.password and opcua.auth.password,
// mqtt.password_file, api.token_file) read, and every device's connection
// section (modbus or opcua) filled with its poll interval and tags, ready
// to hand to the drivers. A device's tags: are decoded as Modbus or OPC UA
// tags according to that section. Decoding is strict: an unknown key is
// an error, with a suggestion when a known key is close. All problems in a
// file are reported at once, joined with errors.Join and sorted by line,
// each as a *Error that reads
//
//	plant.yaml:14:13: devices[0].tags[3].type: "flaot32" is not a type; use one of bool, int16, ...
//
// The reference for every key is docs/config.md.
package config
