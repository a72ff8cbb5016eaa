// Package kamailio holds the Kamailio interop test: one call through
// Kamailio whose rtpengine module drives sipd -relay-only over rtpengine's
// NG protocol, with sipp as caller and callee and the test's own sockets
// as the RTP endpoints, all in a throw-away network namespace. It needs
// root, kamailio (with modules/rtpengine.so, as Debian ships it) and sipp:
// scripts/install-deps.sh installs both. Run it with
//
//	go test -run TestKamailioRtpengine -v ./interop/kamailio/
package kamailio
