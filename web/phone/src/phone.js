// The softphone page (GET /phone): an agent logs in with extension and
// password, registers over the server's own WebSocket listener with SIP.js,
// answers (or auto-answers) click-to-dial calls, whose callee and contact ref
// come in the INVITE's X-Teleforge-* headers, and places calls with an
// outbound_id and a contact ref.
//
// window.phone is the page's state as plain data (tests read it);
// window.softphone holds the actions (tests may call them).

import { Inviter, Registerer, RegistererState, SessionState, UserAgent } from "sip.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const LOG_LINES = 200;
const STATS_EVERY_MS = 250;
const UNREGISTER_WAIT_MS = 1000;
const SIP_DEBUG = query.get("sipdebug") === "1";

/** Everything a test (or a curious agent in the console) may read. */
const phone = {
  ready: false,
  registered: false,
  registration: "idle", // idle | registering | registered | failed
  registrationError: null,
  call: null,
  connectionState: null,
  inboundRtpPackets: 0,
  outboundRtpPackets: 0,
  transport: null, // the call's ICE and DTLS states, from getStats()
  muted: false,
  localRingback: false, // the page's own ring tone plays (a 180 without media)
  log: [],
};
window.phone = phone;

let ua = null;
let registerer = null;
let session = null;
let sdh = null;
let statsTimer = null;
let hangupWhenUp = false;
let config = {};

function log(text) {
  const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
  phone.log.push(line);
  if (phone.log.length > LOG_LINES) phone.log.shift();
  console.log(`[phone] ${text}`);
  const item = document.createElement("li");
  item.textContent = line;
  const list = $("log");
  list.prepend(item);
  while (list.childElementCount > LOG_LINES) list.lastElementChild.remove();
}

// ------------------------------------------------------------ local ringback
// A callee that rings without early media (a 180 with no SDP) sends us no
// sound: like a desk phone, the page makes its own ring tone (ITU-T E.180:
// 425 Hz, 1 s on, 4 s off) until media comes or the call ends.
const RING_HZ = 425;
const RING_ON_S = 1;
const RING_PERIOD_S = 5;
let ringback = null;

function startLocalRingback() {
  if (ringback !== null) return;
  try {
    const context = new AudioContext();
    const tone = context.createOscillator();
    const gain = context.createGain();
    tone.frequency.value = RING_HZ;
    gain.gain.value = 0;
    const start = context.currentTime;
    for (let at = 0; at < 600; at += RING_PERIOD_S) {
      gain.gain.setValueAtTime(0.2, start + at);
      gain.gain.setValueAtTime(0, start + at + RING_ON_S);
    }
    tone.connect(gain).connect(context.destination);
    tone.start();
    ringback = context;
  } catch (error) {
    log(`no ring tone: ${error.message}`);
    return;
  }
  phone.localRingback = true;
  log("ringing (local ring tone)");
}

function stopLocalRingback() {
  if (ringback === null) return;
  ringback.close().catch(() => {});
  ringback = null;
  phone.localRingback = false;
}

// Values typed into the page end up in SIP headers: a line break would let
// them write headers of their own.
const oneLine = (text) => String(text ?? "").replace(/[\r\n]+/g, " ").trim();

// ---------------------------------------------------------------- rendering

function setText(id, text) {
  $(id).textContent = text;
}

function render() {
  const reg = $("reg-state");
  reg.dataset.state = phone.registration;
  const ext = $("ext").value;
  reg.textContent = {
    idle: "Not registered",
    registering: `Registering ${ext}…`,
    registered: `Registered as ${ext}`,
    failed: `Registration failed: ${phone.registrationError}`,
  }[phone.registration];
  $("logout").disabled = ua === null;
  $("call").disabled = !phone.registered || session !== null;

  const call = phone.call;
  const ringing = call !== null && call.direction === "incoming" && call.state === "ringing";
  $("incoming").hidden = !ringing;
  if (call !== null && call.direction === "incoming") {
    setText("in-callee", call.callee || "–");
    setText("in-contact-ref", call.contactRef || "–");
  }
  // While an incoming call rings, its own panel says it all.
  $("call-panel").hidden = call === null || ringing;
  if (call !== null) {
    const state = $("call-state");
    state.dataset.state = call.state;
    const kind = call.direction === "incoming" ? "Incoming call" : "Call";
    const failed = call.state === "ended" && !call.answered && call.status !== null && call.status >= 300;
    state.textContent = `${kind} ${call.callee ?? ""}: ${failed ? "failed" : call.state}`;
    setText("call-status", statusText(call));
    $("hangup").disabled = call.state === "ended";
    $("mute").disabled = call.state !== "established";
  }
  const mute = $("mute");
  mute.setAttribute("aria-pressed", String(phone.muted));
  mute.textContent = phone.muted ? "Unmute" : "Mute";
}

function statusText(call) {
  const parts = [];
  if (call.contactRef) parts.push(`contact ref ${call.contactRef}`);
  if (call.status !== null) parts.push(`SIP ${call.status} ${call.reason ?? ""}`.trim());
  if (call.warning) parts.push(`“${call.warning}”`);
  if (call.error) parts.push(call.error);
  if (call.answered) {
    parts.push(`media ${phone.connectionState ?? "none"}, RTP in ${phone.inboundRtpPackets} / out ${phone.outboundRtpPackets}`);
  }
  return parts.join(" · ");
}

// ------------------------------------------------------------- registration

function registrationFailed(reason) {
  phone.registered = false;
  phone.registration = "failed";
  phone.registrationError = reason;
  log(`registration failed: ${reason}`);
  render();
}

async function login(options = {}) {
  const ext = oneLine(options.ext ?? $("ext").value);
  const password = options.password ?? $("password").value;
  const server = oneLine(options.server ?? $("server").value);
  const domain = oneLine(options.domain ?? $("domain").value);
  $("ext").value = ext;
  await logout();
  const uri = UserAgent.makeURI(`sip:${ext}@${domain}`);
  if (!ext || !uri || !server) {
    registrationFailed("an extension, a WebSocket URL and a SIP domain are needed");
    return;
  }
  phone.registration = "registering";
  phone.registrationError = null;
  render();
  log(`connecting to ${server} as sip:${ext}@${domain}`);
  const agent = new UserAgent({
    uri,
    // ?sipdebug=1: every SIP message and SIP.js's own log in the console.
    transportOptions: { server, traceSip: SIP_DEBUG },
    authorizationUsername: ext,
    authorizationPassword: password,
    userAgentString: "Click2Dial softphone (SIP.js)",
    logLevel: SIP_DEBUG ? "debug" : "warn",
    sessionDescriptionHandlerFactoryOptions: {
      // No public STUN server: the server's media relay is the peer.
      peerConnectionConfiguration: { iceServers: [] },
      iceGatheringTimeout: 500,
    },
    delegate: {
      onInvite: incoming,
      onDisconnect: (error) => {
        if (agent !== ua) return;
        phone.registered = false;
        if (error) registrationFailed(`connection lost (${error.message}): log in again`);
      },
    },
  });
  ua = agent;
  try {
    await agent.start();
  } catch (error) {
    if (agent === ua) {
      ua = null;
      registrationFailed(`cannot connect to ${server}: ${error.message}`);
    }
    return;
  }
  const reg = new Registerer(agent);
  registerer = reg;
  reg.stateChange.addListener((state) => {
    if (reg !== registerer) return;
    if (state === RegistererState.Registered) {
      phone.registered = true;
      phone.registration = "registered";
      log(`registered as ${ext}`);
    } else if (phone.registered) {
      phone.registered = false;
      phone.registration = "idle";
      log(`registration ${state.toLowerCase()}`);
    }
    render();
  });
  await reg.register({
    requestDelegate: {
      onReject: (response) => {
        if (reg !== registerer) return;
        const { statusCode, reasonPhrase } = response.message;
        registrationFailed(`${statusCode} ${reasonPhrase}`);
        // A refused REGISTER is not retried: the agent fixes the password.
        stopAgent();
      },
    },
  });
}

function stopAgent() {
  const agent = ua;
  ua = null;
  registerer = null;
  if (agent !== null) agent.stop().catch((error) => log(`stopping: ${error.message}`));
  render();
}

async function logout() {
  if (session !== null) hangup();
  const reg = registerer;
  if (reg !== null && phone.registered) {
    // Un-REGISTER so that calls stop ringing here at once, but never wait
    // long for a server that went away.
    const answered = new Promise((resolve) => {
      reg.stateChange.addListener((state) => {
        if (state !== RegistererState.Registered) resolve();
      });
      reg.unregister().catch(resolve);
    });
    await Promise.race([answered, new Promise((resolve) => setTimeout(resolve, UNREGISTER_WAIT_MS))]);
  }
  phone.registered = false;
  if (phone.registration !== "failed") phone.registration = "idle";
  if (ua !== null) log("logged out");
  stopAgent();
}

// -------------------------------------------------------------------- calls

function newCall(direction, fields) {
  phone.call = {
    direction,
    state: direction === "incoming" ? "ringing" : "calling",
    callee: null,
    contactRef: null,
    outboundId: null,
    from: null,
    status: null,
    reason: null,
    warning: null,
    error: null,
    answered: false,
    endedBy: null,
    ...fields,
  };
  phone.connectionState = null;
  phone.inboundRtpPackets = 0;
  phone.outboundRtpPackets = 0;
  phone.transport = null;
  phone.muted = false;
  hangupWhenUp = false;
  return phone.call;
}

function incoming(invitation) {
  const request = invitation.request;
  if (session !== null) {
    log(`busy: refused a call from ${invitation.remoteIdentity.uri.user}`);
    invitation.reject({ statusCode: 486 });
    return;
  }
  const call = newCall("incoming", {
    callee: request.getHeader("X-Teleforge-Callee") ?? null,
    contactRef: request.getHeader("X-Teleforge-Contact-Ref") ?? null,
    outboundId: request.getHeader("X-Teleforge-Outbound-Id") ?? null,
    from: invitation.remoteIdentity.uri.user ?? null,
  });
  log(`incoming call from ${call.from} for callee ${call.callee}, contact ref ${call.contactRef}`);
  follow(invitation, call);
  render();
  if ($("autoanswer").checked) answer();
}

function answer() {
  if (session === null || phone.call?.state !== "ringing" || phone.call.direction !== "incoming") return;
  const invitation = session;
  const call = phone.call;
  call.state = "answering";
  log("answering");
  render();
  // The server's INVITE to an agent has no SDP (a late offer): SIP.js then
  // puts its offer in the 200 and takes the answer from the ACK.
  invitation
    .accept({ sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } } })
    .catch((error) => {
      call.error = `cannot answer: ${error.message}`;
      log(call.error);
      render();
    });
}

function reject() {
  if (session === null || phone.call?.state !== "ringing" || phone.call.direction !== "incoming") return;
  log("rejecting");
  phone.call.status = 603;
  phone.call.reason = "Decline";
  phone.call.endedBy = "local";
  session.reject({ statusCode: 603, reasonPhrase: "Decline" });
}

function place(options = {}) {
  const callee = oneLine(options.callee ?? $("callee").value);
  const outboundId = oneLine(options.outboundId ?? $("outbound-id").value);
  const contactRef = oneLine(options.contactRef ?? $("contact-ref").value);
  if (ua === null || !phone.registered) {
    log("log in before placing a call");
    return false;
  }
  if (session !== null) {
    log("a call is already up");
    return false;
  }
  const domain = ua.configuration.uri.host;
  const target = UserAgent.makeURI(`sip:${callee}@${domain}`);
  if (!callee || !target) {
    log(`not a number to call: ${callee}`);
    return false;
  }
  const extraHeaders = [];
  if (outboundId) extraHeaders.push(`X-Teleforge-Outbound-Id: ${outboundId}`);
  if (contactRef) extraHeaders.push(`X-Teleforge-Contact-Ref: ${contactRef}`);
  const inviter = new Inviter(ua, target, {
    extraHeaders,
    // Ringback or the callee's announcements in a 183 are heard.
    earlyMedia: true,
    sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } },
  });
  const call = newCall("outgoing", { callee, outboundId: outboundId || null, contactRef: contactRef || null });
  log(`calling ${callee} (outbound_id ${outboundId || "default"}, contact ref ${contactRef || "none"})`);
  follow(inviter, call);
  render();
  const responded = (response) => {
    const message = response.message;
    call.status = message.statusCode;
    call.reason = message.reasonPhrase;
    call.warning = warningText(message.getHeader("Warning"));
    log(`${message.statusCode} ${message.reasonPhrase}${call.warning ? ` (${call.warning})` : ""}`);
    render();
  };
  inviter
    .invite({
      requestDelegate: {
        onProgress: (response) => {
          if (call.state === "calling") call.state = "ringing";
          const status = response.message.statusCode;
          if (response.message.body) stopLocalRingback(); // early media plays instead
          else if (status === 180) startLocalRingback();
          responded(response);
        },
        onAccept: (response) => {
          stopLocalRingback();
          responded(response);
        },
        onReject: (response) => {
          stopLocalRingback();
          responded(response);
        },
      },
    })
    .catch((error) => {
      call.error = `cannot call: ${error.message}`;
      log(call.error);
      render();
    });
  return true;
}

/** The text of a Warning header (``399 host "text"``), or the header itself. */
function warningText(value) {
  if (!value) return null;
  const match = /^\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"/.exec(value);
  return match ? match[1].replace(/\\(.)/g, "$1") : value;
}

function hangup() {
  const current = session;
  const call = phone.call;
  if (current === null || call === null) return;
  call.endedBy = "local";
  log("hanging up");
  switch (current.state) {
    case SessionState.Initial:
    case SessionState.Establishing:
      if (call.direction === "incoming") {
        if (call.state === "ringing") reject();
        // Answered, the ACK not in yet: the BYE goes once the call is up.
        else hangupWhenUp = true;
      } else {
        current.cancel().catch((error) => log(`cancel: ${error.message}`));
      }
      break;
    case SessionState.Established:
      current.bye().catch((error) => log(`bye: ${error.message}`));
      break;
    default:
      break;
  }
}

function setMuted(muted) {
  phone.muted = Boolean(muted);
  const pc = sdh?.peerConnection;
  if (pc) {
    for (const sender of pc.getSenders()) {
      if (sender.track && sender.track.kind === "audio") sender.track.enabled = !phone.muted;
    }
  }
  log(phone.muted ? "muted" : "unmuted");
  render();
}

/** Follows a session (either direction) until it ends. */
function follow(s, call) {
  session = s;
  s.delegate = {
    onSessionDescriptionHandler: (handler) => attachMedia(handler),
    onBye: () => {
      call.endedBy = "remote";
    },
  };
  s.stateChange.addListener((state) => {
    if (state === SessionState.Established) {
      call.state = "established";
      call.answered = true;
      attachMedia(s.sessionDescriptionHandler);
      log("call established");
      if (hangupWhenUp) s.bye().catch((error) => log(`bye: ${error.message}`));
    } else if (state === SessionState.Terminated) {
      stopLocalRingback();
      if (call.endedBy === null) call.endedBy = "remote";
      call.state = "ended";
      log(`call ended (${call.endedBy})`);
      if (session === s) {
        session = null;
        stopMedia();
      }
    }
    render();
  });
}

// -------------------------------------------------------------------- media

function attachMedia(handler) {
  if (!handler || handler === sdh) return;
  sdh = handler;
  const audio = $("remote-audio");
  const stream = handler.remoteMediaStream;
  audio.srcObject = stream;
  const play = () =>
    audio.play().catch((error) => {
      // A call that ends while play() starts aborts it: nothing to report.
      if (error.name !== "AbortError") log(`audio: ${error.message}`);
    });
  stream.onaddtrack = play;
  play();
  handler.peerConnectionDelegate = {
    onconnectionstatechange: () => {
      const state = handler.peerConnection?.connectionState ?? null;
      if (handler === sdh && state !== null) {
        phone.connectionState = state;
        log(`media ${state}`);
        render();
      }
    },
  };
  if (statsTimer === null) statsTimer = setInterval(sampleStats, STATS_EVERY_MS);
}

async function sampleStats() {
  const pc = sdh?.peerConnection;
  if (!pc) return;
  phone.connectionState = pc.connectionState;
  let inbound = 0;
  let outbound = 0;
  const report = await pc.getStats();
  report.forEach((entry) => {
    if (entry.type === "transport") {
      // Where a call that never connects is stuck: ICE or DTLS, and the
      // addresses of the pair ICE chose.
      const pair = report.get(entry.selectedCandidatePairId);
      const address = (id) => {
        const candidate = report.get(id);
        return candidate ? `${candidate.address}:${candidate.port}` : null;
      };
      phone.transport = {
        iceState: entry.iceState,
        dtlsState: entry.dtlsState,
        dtlsRole: entry.dtlsRole ?? null,
        local: pair ? address(pair.localCandidateId) : null,
        remote: pair ? address(pair.remoteCandidateId) : null,
      };
    }
    if ((entry.kind ?? entry.mediaType) !== "audio") return;
    if (entry.type === "inbound-rtp") inbound += entry.packetsReceived ?? 0;
    else if (entry.type === "outbound-rtp") outbound += entry.packetsSent ?? 0;
  });
  phone.inboundRtpPackets = inbound;
  phone.outboundRtpPackets = outbound;
  render();
}

function stopMedia() {
  if (statsTimer !== null) clearInterval(statsTimer);
  statsTimer = null;
  if (sdh !== null) phone.connectionState = "closed";
  sdh = null;
  $("remote-audio").srcObject = null;
}

// --------------------------------------------------------------------- page

async function loadConfig() {
  // Relative to /phone, like the page's other files.
  try {
    const response = await fetch("phone/config.json", { cache: "no-store" });
    if (response.ok) return await response.json();
    log(`phone/config.json: HTTP ${response.status}`);
  } catch (error) {
    log(`phone/config.json: ${error.message}`);
  }
  return {};
}

async function start() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    login();
  });
  $("logout").addEventListener("click", () => logout());
  $("dial-form").addEventListener("submit", (event) => {
    event.preventDefault();
    place();
  });
  $("answer").addEventListener("click", answer);
  $("reject").addEventListener("click", reject);
  $("hangup").addEventListener("click", hangup);
  $("mute").addEventListener("click", () => setMuted(!phone.muted));
  window.addEventListener("pagehide", () => ua?.stop());

  config = await loadConfig();
  $("server").value = query.get("server") ?? config.websocket_url ?? "";
  $("domain").value = query.get("domain") ?? config.sip_domain ?? location.hostname;
  $("ext").value = query.get("ext") ?? "";
  $("password").value = query.get("password") ?? "";
  $("autoanswer").checked = query.get("autoanswer") === "1";
  if (!$("server").value) log("the server has no ws: or wss: SIP listener: enter a WebSocket URL");
  phone.ready = true;
  render();
  if (query.get("autologin") === "1") await login();
}

window.softphone = { login, logout, place, answer, reject, hangup, setMuted };
start();
