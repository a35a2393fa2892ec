// Package opcua is fieldgate's OPC UA driver, over gopcua v0.8.0's client.
//
// Config keys (devices[i].opcua): url, security_policy (None |
// Basic256Sha256 | Aes128_Sha256_RsaOaep | Aes256_Sha256_RsaPss),
// security_mode (None | Sign | SignAndEncrypt), cert_file, key_file,
// trust_dir, auth {mode: anonymous | username | certificate, username,
// password, cert_file, key_file}, timeout. Tag keys: name, node (any
// NodeId form, nsu=<uri>;... resolved at each connect), mode (poll |
// subscribe), unit, description, poll, deadband, report, max_silence,
// queue_size, and the write keys (writable, min, max, rate_limit, verify)
// that the gateway's write path reads.
//
// Values: see Value for the type table and Quality for status codes.
// Subscribed tags report only what changed since the previous Read; see
// Driver. Server certificates are checked against trust_dir; see
// UntrustedError. Writes: see Driver.Write.
package opcua
