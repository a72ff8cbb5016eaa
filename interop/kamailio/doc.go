// Package kamailio holds the Kamailio interop tests, run in throw-away
// network namespaces with sipp as caller and callee:
//
//   - TestKamailioRtpengine: calls through Kamailio whose rtpengine
//     module drives sipd -relay-only over rtpengine's NG protocol, with
//     the test's own sockets as the RTP endpoints: with a minimal script
//     (testdata/kamailio.cfg), with Kamailio's stock kamailio.cfg with
//     WITH_NAT and WITH_RTPENGINE (read from the installed package, see
//     stockConfig in stock_test.go) and a
//     registered callee, and with that config and the caller behind a
//     NAT (internal/netns AddBehindNAT), where SIP-source-address must
//     reach the caller before it sends and trust-address must not;
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
// They need root, kamailio (with modules/rtpengine.so and nathelper.so,
// as Debian ships them), sipp and nft: scripts/install-deps.sh installs
// them. OpenSIPS is not tested: Debian 12 has no package of it
// (`apt-get update; apt-cache search opensips` prints nothing). Run them
// with
//
//	go test -run TestKamailio -v ./interop/kamailio/
package kamailio
