// Package webrtc holds the browser tests of issue 13: headless Chromium
// (Debian's chromium) with a fake microphone runs JsSIP (pinned in
// package-lock.json, installed and bundled by npm ci into build/jssip.js)
// on the test page in page/, registers over ws or wss, and calls a
// plain-RTP phone (internal/sipua for SIP, internal/rtpphone for media)
// through sipd, or through Kamailio driving sipd -relay-only over NG. Each
// party sits in its own network namespace (internal/netns): Chromium
// gathers no ICE candidates on loopback.
//
// The tests need root, chromium, nsenter and the npm install;
// scripts/install-deps.sh provides all of them. Outside CI they skip
// with the reason when something is missing; under CI=true they fail.
//
//	go test -count=1 -v ./interop/webrtc/
package webrtc
