// Package kamailio holds the Kamailio interop tests, run in throw-away
// network namespaces with sipp as caller and callee:
//
//   - TestKamailioRtpengine: one call through Kamailio whose rtpengine
//     module drives sipd -relay-only over rtpengine's NG protocol, with
//     the test's own sockets as the RTP endpoints, all in one namespace;
//   - TestKamailioRelaySet: the module with a set of three sipd
//     -relay-only nodes, one with a full port pool and one drained
//     midway; every call goes to a relay that takes it, none fails.
//     Kamailio, the caller, the callee and each relay are hosts of their
//     own (internal/netns' line with a host per relay off its router);
//   - TestKamailioMultiHomed: the module sends direction=internal
//     direction=external to a relay whose namespace (the router of
//     internal/netns' line) has an internal interface on the caller's
//     subnet and an external one, advertised as a public address, on the
//     callee's; on tc and on native XDP.
//
// They need root, kamailio (with modules/rtpengine.so, as Debian ships
// it) and sipp: scripts/install-deps.sh installs both. Run them with
//
//	go test -run TestKamailio -v ./interop/kamailio/
package kamailio
