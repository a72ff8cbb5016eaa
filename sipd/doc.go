// Package sipd assembles the sipd daemon from its parts: configuration,
// Run, the HTTP API and relay-only mode. cmd/sipd parses flags and
// signals and calls Run; the SIP and media work is done in the packages
// below sipd/.
//
//   - Configuration (config.go, default.yaml): the YAML file, the
//     embedded default, and validation that reports every error at once.
//     The sip: section is package sipconf's.
//   - Run (run.go): builds the media relay stack (package mediapath,
//     unless media.mode is none), the SIP server (sipserver) with the
//     media controller (media) in it, and the HTTP API, runs them until
//     the context ends, and reloads the users file on SIGHUP.
//   - Relay-only mode (ngrun.go): with Config.RelayOnly, Run serves the
//     relay to a proxy's rtpengine module over the NG protocol (package
//     ng, with ngbackend over the media controller) instead of SIP.
//   - The HTTP API (api.go, api_protect.go): /health, /metrics, /flows,
//     /stats, /drain, /registrations, /calls, with the bearer token and
//     cross-origin checks; its JSON shapes are package wire's, so
//     relayctl reads them without importing the daemon.
//
// The parts live in the packages below sipd/: sipserver (sockets and the
// sipgo stack), proxy (the SIP core), registrar, dialog, journal, digest,
// nat, protect, connguard and secret; media and sdprewrite join SIP to
// the relay engine (package relay). sipd/SIP.md describes the SIP side
// and docs/ARCHITECTURE.md the whole call path.
package sipd
