// The API as the page calls it: the token (this tab's sessionStorage), JSON in and
// out, the error shape {"error", "reason", "field"} turned into an ApiError.
const TOKEN_KEY = "vmapp.token";

export class ApiError extends Error {
  constructor(status, body) {
    const reason = (body && (body.reason || body.error)) || `HTTP ${status}`;
    super(body && body.field ? `${reason} (${body.field})` : reason);
    this.status = status;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

// The project the page acts in (?project= on every call), from /v1/me at sign-in.
let project = null;
export function setProject(name) { project = name; }
export function currentProject() { return project; }

// Called when the API refuses the signed-in token (revoked, expired): app.js signs out.
let refusedToken = () => {};
export function onRefusedToken(callback) { refusedToken = callback; }

export function withProject(path, params = {}) {
  const query = new URLSearchParams(params);
  if (project) query.set("project", project);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export async function api(method, path, { body, params, bearer } = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${bearer || token.get() || ""}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(withProject(path, params), init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (resp.status === 401 && !bearer) refusedToken();
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

export const vmPath = (name, rest = "") => `/v1/vms/${encodeURIComponent(name)}${rest}`;

// A WebSocket URL on this origin (ws: or wss: as the page was loaded).
export function socketURL(path, params) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}?${new URLSearchParams(params)}`;
}

// One element with its text (never markup from data) and attributes.
export function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  return node;
}

export function notice(message, isError = false) {
  const node = document.getElementById("notice");
  node.textContent = message || "";
  node.classList.toggle("error", isError);
  node.hidden = !message;
}
