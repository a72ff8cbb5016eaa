// The WebRTC test page: a JsSIP phone the Go test drives. Parameters come
// from the query string (ws, user, password, domain, debug); the page
// posts what happens to /event and takes commands from /command, which
// the test's HTTP server (internal/browser) long-polls. Everything it
// reports is JSON: {seq, type, data}.
'use strict';

const params = new URLSearchParams(location.search);
let seq = 0;

// post sends one event to the test; the test orders them by seq.
function post(type, data) {
  const body = JSON.stringify({ seq: ++seq, type, data: data || {} });
  return fetch('/event', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body })
    .catch(() => {});
}

function text(v) {
  if (v instanceof Error) return v.stack || String(v);
  if (typeof v === 'string') return v;
  try { return JSON.stringify(v); } catch (e) { return String(v); }
}

// Console output goes to the test too, so a failure explains itself
// (JsSIP's debug log included when debug=1).
for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
  const orig = console[level].bind(console);
  console[level] = (...args) => {
    orig(...args);
    post('console', { level, text: args.map(text).join(' ') });
  };
}
window.addEventListener('error', (e) => post('console', { level: 'error', text: 'uncaught: ' + text(e.error || e.message) }));
window.addEventListener('unhandledrejection', (e) => post('console', { level: 'error', text: 'unhandled rejection: ' + text(e.reason) }));

// Audio only, and the fake device's beeps kept as they are: no echo
// cancellation, noise suppression or gain control to flatten them.
const audio = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

let ua = null;
let session = null;
let statsTimer = null;

function remoteAudio(pc) {
  const el = document.getElementById('remote');
  pc.addEventListener('track', (e) => {
    el.srcObject = e.streams[0] || new MediaStream([e.track]);
    el.play().catch((err) => post('console', { level: 'error', text: 'play: ' + text(err) }));
    post('track', { kind: e.track.kind });
  });
}

// stats reduces getStats() to what the test checks: inbound and outbound
// audio RTP, the selected candidate pair and the DTLS transport.
async function stats(pc) {
  const r = await pc.getStats();
  const out = { connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState };
  const byId = new Map();
  r.forEach((s) => byId.set(s.id, s));
  r.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.inbound = {
        packetsReceived: s.packetsReceived || 0, bytesReceived: s.bytesReceived || 0,
        packetsLost: s.packetsLost || 0, totalAudioEnergy: s.totalAudioEnergy || 0,
        audioLevel: s.audioLevel || 0, totalSamplesReceived: s.totalSamplesReceived || 0,
        codec: byId.has(s.codecId) ? byId.get(s.codecId).mimeType : '',
      };
    } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
      out.outbound = {
        packetsSent: s.packetsSent || 0, bytesSent: s.bytesSent || 0,
        codec: byId.has(s.codecId) ? byId.get(s.codecId).mimeType : '',
      };
    } else if (s.type === 'transport') {
      out.dtlsState = s.dtlsState || '';
      out.dtlsRole = s.dtlsRole || '';
      out.srtpCipher = s.srtpCipher || '';
      out.iceState = s.iceState || '';
      const pair = byId.get(s.selectedCandidatePairId);
      if (pair) {
        const cand = (id) => {
          const c = byId.get(id) || {};
          return { address: c.address || c.ip || '', port: c.port || 0, protocol: c.protocol || '', candidateType: c.candidateType || '' };
        };
        out.pair = {
          state: pair.state, nominated: !!pair.nominated,
          local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId),
          bytesSent: pair.bytesSent || 0, bytesReceived: pair.bytesReceived || 0,
        };
      }
    }
  });
  return out;
}

function startStats(pc) {
  stopStats();
  statsTimer = setInterval(async () => {
    try {
      post('stats', await stats(pc));
    } catch (err) {
      post('console', { level: 'error', text: 'getStats: ' + text(err) });
    }
  }, 500);
}

function stopStats() {
  if (statsTimer) clearInterval(statsTimer);
  statsTimer = null;
}

function register() {
  if (params.get('debug') === '1') JsSIP.debug.enable('JsSIP:*');
  const socket = new JsSIP.WebSocketInterface(params.get('ws'));
  ua = new JsSIP.UA({
    sockets: [socket],
    uri: 'sip:' + params.get('user') + '@' + params.get('domain'),
    password: params.get('password'),
    // register=0: no registrar (the Kamailio test routes by config).
    register: params.get('register') !== '0',
    register_expires: 600,
    session_timers: false,
  });
  ua.on('connected', () => post('connected'));
  ua.on('disconnected', (e) => post('disconnected', { code: e && e.code, reason: e && e.reason }));
  ua.on('registered', () => post('registered'));
  ua.on('newRTCSession', (e) => { if (e.originator === 'remote') incoming(e); });
  ua.on('registrationFailed', (e) => post('registrationFailed', {
    cause: e.cause, status: e.response ? e.response.status_code : 0,
  }));
  ua.start();
}

const pcConfig = { iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };

// The session's events, for calls either way. accepted carries the SDP
// of the 200 OK an outgoing call got.
const sessionEvents = {
  progress: (e) => post('progress', { status: e.response ? e.response.status_code : 0 }),
  accepted: (e) => post('accepted', { status: e.response ? e.response.status_code : 0, sdp: e.response ? e.response.body || '' : '' }),
  confirmed: () => post('confirmed'),
  ended: (e) => { stopStats(); post('ended', { originator: e.originator, cause: e.cause }); },
  failed: (e) => {
    stopStats();
    post('failed', { originator: e.originator, cause: e.cause, status: e.message && e.message.status_code ? e.message.status_code : 0 });
  },
};

function watch(pc) {
  remoteAudio(pc);
  pc.addEventListener('connectionstatechange', () => post('connectionState', { state: pc.connectionState }));
  startStats(pc);
}

function call(target) {
  session = ua.call('sip:' + target + '@' + params.get('domain'), {
    mediaConstraints: { audio, video: false },
    pcConfig,
    eventHandlers: Object.assign({
      sending: (e) => post('sending', { callId: e.request.call_id, sdp: e.request.body || '' }),
    }, sessionEvents),
  });
  watch(session.connection);
}

// An incoming call waits for the test's answer command.
function incoming(e) {
  session = e.session;
  for (const [name, fn] of Object.entries(sessionEvents)) session.on(name, fn);
  session.on('peerconnection', (ev) => watch(ev.peerconnection));
  post('incoming', { callId: e.request.call_id, from: e.request.from.uri.user, sdp: e.request.body || '' });
}

function answer() {
  if (!session) throw new Error('no call to answer');
  session.answer({ mediaConstraints: { audio, video: false }, pcConfig });
}

// loopback connects two peer connections inside the page, with no
// signaling server: the harness's own check that this browser, in this
// network, gets audio across and that the stats read it.
async function loopback() {
  const a = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
  const b = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  remoteAudio(b);
  const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
  stream.getTracks().forEach((t) => a.addTrack(t, stream));
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  post('loopback', { offer: a.localDescription.sdp });
  startStats(b);
}

// capture records 3 s of the fake microphone at 8 kHz, as the PCMU
// encoder sees it, for the test to check rtpphone's idea of sound.
async function capture() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
  const ctx = new AudioContext({ sampleRate: 8000 });
  const src = ctx.createMediaStreamSource(stream);
  const proc = ctx.createScriptProcessor(4096, 1, 1);
  let samples = [];
  proc.onaudioprocess = (e) => {
    samples = samples.concat(Array.from(e.inputBuffer.getChannelData(0)));
    if (samples.length >= 24000) {
      proc.disconnect();
      post('capture', { rate: ctx.sampleRate, samples: samples.slice(0, 24000).map((v) => Math.round(v * 32767)) });
    }
  };
  src.connect(proc);
  proc.connect(ctx.destination);
}

async function run(cmd) {
  switch (cmd.op) {
    case 'call': call(cmd.target); break;
    case 'answer': answer(); break;
    case 'hangup': if (session) session.terminate(); break;
    case 'loopback': await loopback(); break;
    case 'capture': await capture(); break;
    default: throw new Error('unknown command ' + cmd.op);
  }
}

async function commands() {
  for (;;) {
    let cmd = null;
    try {
      const r = await fetch('/command');
      if (r.status === 200) cmd = await r.json();
    } catch (err) {
      // The test has gone; stop asking.
      return;
    }
    if (!cmd) continue;
    try {
      await run(cmd);
      post('done', { op: cmd.op });
    } catch (err) {
      post('console', { level: 'error', text: cmd.op + ': ' + text(err) });
      post('done', { op: cmd.op, error: text(err) });
    }
  }
}

post('loaded', { userAgent: navigator.userAgent, secure: window.isSecureContext });
if (params.get('ws')) register();
commands();
