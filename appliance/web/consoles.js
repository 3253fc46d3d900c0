// The consoles of a VM page: the serial console in xterm.js, the screen in noVNC.
// Each opens with a one-time ticket (POST /v1/tickets), which the WebSocket URL
// carries (a browser cannot set an Authorization header on a WebSocket). The
// libraries are imported when a console opens, never for the VM list.
import { api, el, socketURL, vmPath, currentProject } from "/ui/api.js";

const XTERM = "/ui/vendor/xterm/lib/xterm.mjs";
const XTERM_FIT = "/ui/vendor/xterm-addon-fit/lib/addon-fit.mjs";
const XTERM_CSS = "/ui/vendor/xterm/css/xterm.css";
const NOVNC = "/ui/vendor/novnc/core/rfb.js";
const HISTORY_BYTES = 16384; // the console log's tail, sent first so the screen is not blank

function loadStyle(href) {
  if (!document.querySelector(`link[href="${href}"]`)) {
    document.head.append(el("link", undefined, { rel: "stylesheet", href }));
  }
}

// The WebSocket of a ticket: the path the server named for it, else the kind's route.
function ticketURL(ticket, vm, kind, params = {}) {
  const path = typeof ticket.path === "string" && ticket.path.startsWith("/v1/vms/")
    ? ticket.path : vmPath(vm, `/${kind}`);
  const query = { ticket: ticket.ticket, ...params };
  if (currentProject()) query.project = currentProject();
  return socketURL(path, query);
}

const askTicket = (vm, kind) => api("POST", "/v1/tickets", { body: { vm, kind } });

// The serial console: returns { close() }. Read-only when the ticket says the
// caller may not type (a viewer): xterm takes no input then.
export async function openSerial(container, vm, onState = () => {}) {
  loadStyle(XTERM_CSS);
  const [{ Terminal }, { FitAddon }] = await Promise.all([import(XTERM), import(XTERM_FIT)]);
  const ticket = await askTicket(vm, "console");
  container.replaceChildren();
  const term = new Terminal({ disableStdin: !ticket.write, scrollback: 5000, cursorBlink: ticket.write });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(container);
  fit.fit();
  const socket = new WebSocket(ticketURL(ticket, vm, "console", { history: HISTORY_BYTES }));
  socket.binaryType = "arraybuffer";
  socket.onopen = () => onState(ticket.write ? "connected" : "connected (read-only)");
  socket.onmessage = (event) => term.write(
    typeof event.data === "string" ? event.data : new Uint8Array(event.data));
  socket.onclose = () => { term.write("\r\n[console closed]\r\n"); onState("closed"); };
  // xterm gives strings; the server takes a text frame as its UTF-8 bytes.
  const typed = term.onData((data) => { if (socket.readyState === WebSocket.OPEN) socket.send(data); });
  const resized = () => fit.fit();
  window.addEventListener("resize", resized);
  term.focus();
  return {
    terminal: term,
    close() {
      window.removeEventListener("resize", resized);
      typed.dispose();
      socket.onclose = null;
      socket.close();
      term.dispose();
      container.replaceChildren();
    },
  };
}

async function rfbOn(container, url, viewOnly, onState) {
  const { default: RFB } = await import(NOVNC);
  container.replaceChildren();
  const rfb = new RFB(container, url, { shared: true });
  rfb.viewOnly = viewOnly;
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => onState(viewOnly ? "connected (view only)" : "connected"));
  rfb.addEventListener("disconnect", (event) => onState(event.detail.clean ? "closed" : "disconnected"));
  rfb.addEventListener("securityfailure", (event) => onState(`refused: ${event.detail.reason || "security"}`));
  return { rfb, close() { rfb.disconnect(); container.replaceChildren(); } };
}

// The VNC console of a VM page: a fresh ticket, noVNC on its WebSocket.
export async function openVNC(container, vm, onState = () => {}) {
  const ticket = await askTicket(vm, "vnc");
  return rfbOn(container, ticketURL(ticket, vm, "vnc"), !ticket.write, onState);
}

// `#vnc?vm=NAME&ticket=T[&project=P]`: the URL `vmctl vnc` prints; no sign-in,
// the ticket is the credential (the server enforces a viewer's view-only).
export async function bareVNC(params, container, onState = () => {}) {
  const vm = params.get("vm") || "";
  const query = { ticket: params.get("ticket") || "" };
  if (params.get("project")) query.project = params.get("project");
  return rfbOn(container, socketURL(vmPath(vm, "/vnc"), query), false, onState);
}
