package sdprewrite

// The corpus: offers and answers shaped like those real endpoints send (softphones, desk phones, gateways,
// browsers). Written for these tests; addresses are from the documentation ranges (RFC 5737, RFC 3849).

// softphone is a typical SIP softphone offer: PCMU, PCMA, telephone-event, session-level c= only.
const softphone = "v=0\r\n" +
	"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n" +
	"s=-\r\n" +
	"c=IN IP4 192.0.2.10\r\n" +
	"t=0 0\r\n" +
	"m=audio 49170 RTP/AVP 0 8 101\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-16\r\n" +
	"a=ptime:20\r\n" +
	"a=sendrecv\r\n"

// audioVideo is a video phone offer with media-level c= only (no session-level c=), bandwidth lines, H.264 fmtp
// and an a=rtcp without address on each stream.
const audioVideo = "v=0\r\n" +
	"o=bob 1234 5678 IN IP4 198.51.100.7\r\n" +
	"s=Talk\r\n" +
	"t=0 0\r\n" +
	"a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n" +
	"m=audio 7078 RTP/AVP 96 0 8 101\r\n" +
	"c=IN IP4 198.51.100.7\r\n" +
	"b=AS:64\r\n" +
	"a=rtpmap:96 opus/48000/2\r\n" +
	"a=fmtp:96 useinbandfec=1\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=rtcp:7079\r\n" +
	"m=video 9078 RTP/AVP 103 99\r\n" +
	"c=IN IP4 198.51.100.7\r\n" +
	"b=AS:512\r\n" +
	"a=rtpmap:103 VP8/90000\r\n" +
	"a=rtpmap:99 H264/90000\r\n" +
	"a=fmtp:99 profile-level-id=42801F; packetization-mode=1\r\n" +
	"a=rtcp-fb:* nack pli\r\n" +
	"a=rtcp:9079\r\n"

// rtcpMux offers rtcp-mux with a=rtcp on the RTP port (RFC 5761 section 5.1.3) and SRTP (SDES crypto).
const rtcpMux = "v=0\r\n" +
	"o=- 3815281937 3815281937 IN IP4 192.0.2.20\r\n" +
	"s=pjmedia\r\n" +
	"b=AS:84\r\n" +
	"t=0 0\r\n" +
	"a=X-nat:0\r\n" +
	"m=audio 4000 RTP/SAVP 9 0 101\r\n" +
	"c=IN IP4 192.0.2.20\r\n" +
	"b=TIAS:64000\r\n" +
	"a=rtcp:4000 IN IP4 192.0.2.20\r\n" +
	"a=sendrecv\r\n" +
	"a=rtpmap:9 G722/8000\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-16\r\n" +
	"a=rtcp-mux\r\n" +
	"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32\r\n"

// rtcpAddr is RFC 3605's example: RTCP on another address and port than RTP.
const rtcpAddr = "v=0\r\n" +
	"o=- 25678 753849 IN IP4 192.0.2.30\r\n" +
	"s=-\r\n" +
	"c=IN IP4 192.0.2.30\r\n" +
	"t=0 0\r\n" +
	"m=audio 49170 RTP/AVP 0\r\n" +
	"a=rtcp:53020 IN IP4 192.0.2.31\r\n"

// ipv6 is an IPv6-only desk phone offer.
const ipv6 = "v=0\r\n" +
	"o=- 1 1 IN IP6 2001:db8::10\r\n" +
	"s=-\r\n" +
	"c=IN IP6 2001:db8::10\r\n" +
	"t=0 0\r\n" +
	"m=audio 20000 RTP/AVP 8 101\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=rtcp:20001 IN IP6 2001:db8::10\r\n"

// holdSendonly is a re-INVITE putting the call on hold the RFC 3264 way, with a media-level c=.
const holdSendonly = "v=0\r\n" +
	"o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"m=audio 49170 RTP/AVP 0 101\r\n" +
	"c=IN IP4 192.0.2.10\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=sendonly\r\n"

// holdInactive sets the direction at session level only.
const holdInactive = "v=0\r\n" +
	"o=alice 2890844526 2890844528 IN IP4 192.0.2.10\r\n" +
	"s=-\r\n" +
	"c=IN IP4 192.0.2.10\r\n" +
	"t=0 0\r\n" +
	"a=inactive\r\n" +
	"m=audio 49170 RTP/AVP 0\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n"

// holdOld is old-style hold (RFC 2543): session-level c=0.0.0.0 and no direction attribute.
const holdOld = "v=0\r\n" +
	"o=CiscoSystemsCCM-SIP 2000 2 IN IP4 192.0.2.40\r\n" +
	"s=SIP Call\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"t=0 0\r\n" +
	"m=audio 24580 RTP/AVP 0 101\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-15\r\n"

// rejectedVideo is an answer accepting audio and rejecting video (port 0, RFC 3264 section 6).
const rejectedVideo = "v=0\r\n" +
	"o=callee 3344 3345 IN IP4 198.51.100.20\r\n" +
	"s=-\r\n" +
	"c=IN IP4 198.51.100.20\r\n" +
	"t=0 0\r\n" +
	"m=audio 30000 RTP/AVP 0\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"m=video 0 RTP/AVP 96\r\n" +
	"a=rtpmap:96 H264/90000\r\n"

// webrtc is a browser offer (one audio line) with ICE, DTLS and BUNDLE.
const webrtc = "v=0\r\n" +
	"o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0\r\n" +
	"a=extmap-allow-mixed\r\n" +
	"a=msid-semantic: WMS stream\r\n" +
	"a=ice-options:trickle\r\n" +
	"m=audio 54400 UDP/TLS/RTP/SAVPF 111 0 8 126\r\n" +
	"c=IN IP4 203.0.113.99\r\n" +
	"a=rtcp:9 IN IP4 0.0.0.0\r\n" +
	"a=candidate:842163049 1 udp 1677729535 203.0.113.99 54400 typ srflx raddr 10.0.0.5 rport 54400 generation 0\r\n" +
	"a=candidate:1467250027 1 udp 2122260223 10.0.0.5 54400 typ host generation 0\r\n" +
	"a=end-of-candidates\r\n" +
	"a=ice-ufrag:Oy4y\r\n" +
	"a=ice-pwd:2lYHHg8lZ8nQ0s1Kx9yqGmA5\r\n" +
	"a=fingerprint:sha-256 3C:4E:0B:7E:6A:DF:4A:90:88:1B:A3:2E:5D:8C:04:9A:9B:1D:A9:E4:4A:21:5C:60:2B:6E:9F:7F:0E:B2:77:D1\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:0\r\n" +
	"a=sendrecv\r\n" +
	"a=msid:stream track\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=rtcp-fb:111 transport-cc\r\n" +
	"a=fmtp:111 minptime=10;useinbandfec=1\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:126 telephone-event/8000\r\n" +
	"a=ssrc:1001 cname:abc\r\n"

// trickle is a browser offer sent before any candidate: c=0.0.0.0 and port 9 are placeholders (RFC 8840), not hold.
const trickle = "v=0\r\n" +
	"o=- 77 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=ice-lite\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=ice-ufrag:abcd\r\n" +
	"a=ice-pwd:0123456789abcdef012345\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n"

// sessionTwo has a session-level c= only and two m-lines; the tests relay only one of them.
const sessionTwo = "v=0\r\n" +
	"o=- 10 20 IN IP4 192.0.2.50\r\n" +
	"s=-\r\n" +
	"c=IN IP4 192.0.2.50\r\n" +
	"t=0 0\r\n" +
	"m=audio 10000 RTP/AVP 0\r\n" +
	"i=main audio\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"m=video 10002 RTP/AVP 96\r\n" +
	"a=rtpmap:96 H264/90000\r\n"

// lateOffer is the SDP of a 200 OK answering an INVITE without body (late offer, RFC 3261 section 13.2.1), as
// FreeSWITCH sends it: the offer comes from the callee and the answer will be in the ACK.
const lateOffer = "v=0\r\n" +
	"o=FreeSWITCH 1611811564 1611811565 IN IP4 198.51.100.30\r\n" +
	"s=FreeSWITCH\r\n" +
	"c=IN IP4 198.51.100.30\r\n" +
	"t=0 0\r\n" +
	"m=audio 21260 RTP/AVP 18 0 101\r\n" +
	"a=rtpmap:18 G729/8000\r\n" +
	"a=fmtp:18 annexb=no\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-16\r\n" +
	"a=ptime:20\r\n" +
	"a=sendrecv\r\n" +
	"a=rtcp:21261 IN IP4 198.51.100.30\r\n"

// t38 is a re-INVITE switching to fax: audio rejected, image accepted, and a line type pion does not know (y=,
// the SSRC line of 3GPP TS 24.229 devices) that must be kept. Bare LF line endings, as some gateways send.
const t38 = "v=0\n" +
	"o=gw 100 101 IN IP4 192.0.2.60\n" +
	"s=-\n" +
	"c=IN IP4 192.0.2.60\n" +
	"t=0 0\n" +
	"y=0110000000\n" +
	"m=audio 0 RTP/AVP 0\n" +
	"m=image 6000 udptl t38\n" +
	"a=T38FaxVersion:0\n" +
	"a=T38MaxBitRate:14400\n" +
	"a=T38FaxRateManagement:transferredTCF\n" +
	"a=T38FaxUdpEC:t38UDPRedundancy\n"

// noMedia is a body with no m-line at all (seen in some UPDATEs and in SDP capability answers to OPTIONS).
const noMedia = "v=0\r\n" +
	"o=- 5 5 IN IP4 192.0.2.70\r\n" +
	"s=-\r\n" +
	"c=IN IP4 192.0.2.70\r\n" +
	"t=0 0\r\n"
