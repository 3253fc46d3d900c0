// vm-appliance's page: sign-in, the VM list, the create form, and the routes of
// the fragment: #vms (list), #vm=NAME (a VM), #vnc?vm=NAME&ticket=T (bare VNC).
// Data is only ever rendered as text (el() / textContent), never as markup.
import { api, currentProject, el, notice, onRefusedToken, setProject, token, vmPath } from "/ui/api.js";
import { bareVNC } from "/ui/consoles.js";
import { addressesText, leaveVM, mayChange, mayRead, showVM, vmButtons } from "/ui/vm.js";

const REFRESH_MS = 3000;
const ADDRESSES_MAX_AGE_MS = 15000; // addresses are a file per VM: asked for running VMs, now and then
let me = null;
let listTimer = null;
let bare = null; // the #vnc console's handle, closed when the fragment changes
let drawn = false; // the first draw of the table sets the mark the first-paint benchmark reads
const addressCache = new Map(); // name -> { text, at }

function show(id) {
  for (const section of document.querySelectorAll("body > section")) section.hidden = section.id !== id;
}

async function addressesOf(vms) {
  const now = Date.now();
  const stale = vms.filter((vm) => vm.state === "running"
    && !(addressCache.get(vm.name)?.at > now - ADDRESSES_MAX_AGE_MS));
  await Promise.all(stale.map(async (vm) => {
    try {
      addressCache.set(vm.name, { text: addressesText(await api("GET", vmPath(vm.name, "/addresses"))), at: now });
    } catch { /* gone meanwhile: the next refresh says so */ }
  }));
}

function vmRow(vm) {
  const spec = vm.spec || {};
  const tr = el("tr", undefined, { "data-vm": vm.name, "data-state": vm.state });
  const name = el("td");
  name.append(el("a", vm.name, { href: `#vm=${encodeURIComponent(vm.name)}` }));
  const actions = el("td", undefined, { class: "actions" });
  actions.append(...vmButtons(vm, me, refreshList));
  // RestartRequired (KubeVirt's condition): spec changes the running VM has not taken live.
  const state = el("td", vm.state, { class: `state-${vm.state}` });
  if (vm.restart_required) {
    state.append(el("span", " · restart required", {
      class: "restart-required", title: `waiting for a restart: ${(vm.pending_changes ?? []).join(", ")}` }));
  }
  tr.append(name, state, el("td", vm.host ?? "—"),
    el("td", spec.cpus, { class: "num" }), el("td", `${spec.memory} MiB`, { class: "num" }),
    el("td", vm.state === "running" ? addressCache.get(vm.name)?.text ?? "" : ""),
    el("td", vm.ready ? "yes" : "no"), actions);
  return tr;
}

async function refreshList() {
  try {
    const answer = await api("GET", "/v1/vms");
    const vms = answer.items ?? answer;
    if (drawn) await addressesOf(vms); // the first draw does not wait for them
    const body = document.querySelector("#vm-table tbody");
    body.replaceChildren(...vms.map(vmRow));
    if (!drawn) {
      drawn = true;
      // For the first-paint benchmark (tests/bench/bench_web.py): the table filled,
      // and two frames later, on screen.
      performance.mark("vmapp:vms-drawn");
      requestAnimationFrame(() => requestAnimationFrame(() => performance.mark("vmapp:vms-painted")));
      document.body.dataset.vmsDrawn = String(vms.length);
      addressesOf(vms).then(() => vms.some((vm) => vm.state === "running") && refreshList());
    }
  } catch (error) {
    notice(`VMs: ${error.message}`, true);
  }
}

async function fillImages() {
  const select = document.querySelector("#create-form select[name=image]");
  if (select.options.length) return;
  try {
    const answer = await api("GET", "/v1/images");
    select.replaceChildren(...(answer.items ?? answer).map((image) => el("option", image.name, { value: image.name })));
  } catch (error) {
    notice(`images: ${error.message}`, true);
  }
}

async function create(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  const spec = { name: data.get("name"), image: data.get("image"),
    cpus: Number(data.get("cpus")), memory: Number(data.get("memory")) };
  if (!data.get("start")) spec.state = "stopped";
  try {
    await api("POST", "/v1/vms", { body: spec, params: { wait: "false" } });
    notice(`${spec.name}: created`);
    form.elements.name.value = "";
  } catch (error) {
    notice(`${spec.name}: ${error.message}`, true);
  }
  refreshList();
}

function route() {
  clearInterval(listTimer);
  leaveVM();
  bare?.then((handle) => handle?.close());
  bare = null;
  const hash = location.hash.slice(1);
  if (hash.startsWith("vnc?")) { // vmctl vnc's URL: the ticket is the credential
    show("vnc");
    const screen = document.getElementById("vnc-bare");
    bare = bareVNC(new URLSearchParams(hash.slice(4)), screen, (state) => {
      screen.dataset.state = state;
      notice(`VNC ${state}`);
    }).catch((error) => { notice(error.message, true); return null; });
    return;
  }
  if (!me) { show("sign-in"); return; }
  if (hash.startsWith("vm=")) {
    show("vm");
    let name = hash.slice(3);
    try { name = decodeURIComponent(name); } catch { /* shown as typed */ }
    showVM(name, me);
    return;
  }
  show("vms");
  if (!mayRead(me)) { notice(`the role ${me.role} may not see VMs`, true); return; }
  document.getElementById("create-form").hidden = !mayChange(me);
  if (mayChange(me)) fillImages();
  refreshList();
  listTimer = setInterval(refreshList, REFRESH_MS);
}

const PROJECT_KEY = "vmapp.project";

function showWho() {
  document.getElementById("who").textContent = `${me.user} (${me.role}) in ${currentProject()}`;
}

async function signIn(bearer) {
  me = await api("GET", "/v1/me", { bearer });
  token.set(bearer);
  const projects = me.projects || [];
  const chosen = sessionStorage.getItem(PROJECT_KEY);
  setProject(projects.includes(chosen) ? chosen : me.project);
  // A user in several projects picks the one the page acts in (?project= on every call).
  const select = document.getElementById("project");
  select.replaceChildren(...projects.map((name) => el("option", name, { value: name })));
  select.value = currentProject();
  document.getElementById("project-choice").hidden = projects.length < 2;
  showWho();
  document.getElementById("sign-out").hidden = false;
}

document.getElementById("project").addEventListener("change", (event) => {
  setProject(event.target.value);
  sessionStorage.setItem(PROJECT_KEY, event.target.value);
  addressCache.clear();
  showWho();
  notice("");
  if (location.hash === "#vms" || !location.hash) route(); else location.hash = "#vms";
});

function signOut() {
  token.clear();
  sessionStorage.removeItem(PROJECT_KEY);
  setProject(null);
  document.getElementById("project-choice").hidden = true;
  me = null;
  drawn = false;
  document.getElementById("who").textContent = "";
  document.getElementById("sign-out").hidden = true;
  document.querySelector("#vm-table tbody").replaceChildren();
  notice("");
  route();
}

document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  try {
    await signIn(input.value.trim());
    input.value = "";
    notice("");
    route();
  } catch (error) {
    notice(`sign-in: ${error.message}`, true);
  }
});
document.getElementById("sign-out").addEventListener("click", signOut);
onRefusedToken(() => {
  if (!me) return;
  signOut();
  notice("signed out: the API refused the token (revoked or expired)", true);
});
document.getElementById("create-form").addEventListener("submit", create);
window.addEventListener("hashchange", route);

(async () => {
  const saved = token.get();
  if (saved && !location.hash.startsWith("#vnc?")) {
    try { await signIn(saved); } catch { token.clear(); }
  }
  route();
})();
