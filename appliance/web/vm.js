// The buttons of a VM (the list and the VM page share them) and the VM page
// (`#vm=NAME`): its fields, its events, its consoles.
import { api, el, notice, vmPath } from "/ui/api.js";
import { openSerial, openVNC } from "/ui/consoles.js";

const REFRESH_MS = 3000;
const EVENTS_SHOWN = 50;
// The roles that may power, change and type into VMs (appliance/access/policy.py).
export const mayChange = (me) => me && (me.role === "admin" || me.role === "operator");
export const mayRead = (me) => me && me.role !== "monitor";

async function act(label, call, after) {
  try {
    await call();
    notice(label);
  } catch (error) {
    notice(`${label}: ${error.message}`, true);
  }
  after();
}

const setState = (vm, state, after) => act(`${vm.name}: ${state}`, () => api(
  "PUT", vmPath(vm.name, "/state"), { body: { state }, params: { wait: "false" } }), after);

function remove(vm, after) {
  if (!window.confirm(`Delete ${vm.name}?`)) return;
  const params = { wait: "false" };
  if (!["stopped", "suspended", "shelved"].includes(vm.state)) params.force = "true";
  act(`${vm.name}: deleted`, () => api("DELETE", vmPath(vm.name), { params }), after);
}

// What "Start" does from these states (issue 14): resume the saved memory, or place again.
const START_LABEL = { suspended: "Resume", shelved: "Unshelve" };

// Start, stop, reboot, suspend, shelve, delete: none for a role that may not (a viewer sees none).
export function vmButtons(vm, me, after) {
  if (!mayChange(me)) return [];
  const button = (text, onclick, name) => el("button", text, { type: "button", "data-action": name, onclick });
  const running = vm.desired_state === "running";
  const up = vm.state === "running" || vm.state === "paused";
  const buttons = [
    button(START_LABEL[vm.state] ?? "Start", () => setState(vm, "running", after), "start"),
    button("Stop", () => setState(vm, "stopped", after), "stop"),
    button("Reboot", () => setState(vm, "reboot", after), "reboot"),
    button("Suspend", () => setState(vm, "suspended", after), "suspend"),
    button("Shelve", () => setState(vm, "shelved", after), "shelve"),
    button("Delete", () => remove(vm, after), "delete"),
  ];
  buttons[0].disabled = running && vm.state === "running";
  buttons[1].disabled = (vm.state === "stopped" && !running) || vm.state === "shelved";
  buttons[2].disabled = vm.state !== "running";
  buttons[3].disabled = !up;
  buttons[4].disabled = vm.state === "shelved";
  return buttons;
}

export const addressesText = (text) => (typeof text === "string" ? text.trim().split("\n").join(", ") : "");

// -- the VM page ------------------------------------------------------------------------------
let page = null; // { name, me, timer, serial, vnc }

function fieldRows(vm, addresses) {
  const spec = vm.spec || {};
  const rows = [
    ["State", vm.reason ? `${vm.state} (${vm.reason})` : vm.state],
    ["Desired state", vm.desired_state], ["Host", vm.host ?? "—"], ["Image", spec.image],
    ["CPUs", spec.cpus], ["Memory", `${spec.memory} MiB`], ["Graphics", spec.graphics ?? "vnc"],
    ["Addresses", addresses || "—"], ["Ready", vm.ready ? "yes" : "no"],
    ["Restart required", vm.restart_required
      ? `yes: ${(vm.pending_changes ?? []).join(", ") || "spec changes"} wait for the next restart` : "no"],
    ["Lock", vm.lock ? `${vm.lock.by}: ${vm.lock.reason}` : "—"], ["Generation", vm.generation],
  ];
  return rows.map(([name, value]) => {
    const tr = el("tr");
    tr.append(el("th", name), el("td", value));
    return tr;
  });
}

function eventRows(events) {
  return events.slice(-EVENTS_SHOWN).reverse().map((event) => {
    const tr = el("tr");
    const time = new Date(event.time * 1000).toISOString().replace("T", " ").slice(0, 19);
    tr.append(el("td", time), el("td", event.kind), el("td", event.actor ?? ""), el("td", event.message));
    return tr;
  });
}

async function drawVM() {
  if (!page) return;
  const { name, me } = page;
  try {
    const vm = await api("GET", vmPath(name));
    const addresses = vm.state === "running" ? addressesText(await api("GET", vmPath(name, "/addresses"))) : "";
    const events = await api("GET", vmPath(name, "/events"));
    if (!page || page.name !== name) return;
    document.getElementById("vm-name").textContent = vm.name;
    document.querySelector("#vm-fields tbody").replaceChildren(...fieldRows(vm, addresses));
    document.querySelector("#vm .vm-actions").replaceChildren(...vmButtons(vm, me, drawVM));
    // Consoles need a running VM; VNC a display (graphics "none" has none).
    const serial = document.getElementById("open-serial");
    const screen = document.getElementById("open-vnc");
    serial.disabled = screen.disabled = vm.state !== "running";
    screen.hidden = !mayRead(me) || vm.spec?.graphics === "none";
    document.querySelector("#vm-events tbody").replaceChildren(...eventRows(events.items ?? events));
  } catch (error) {
    notice(`${name}: ${error.message}`, true);
  }
}

function closeConsoles() {
  for (const key of ["serial", "vnc"]) {
    if (page && page[key]) { page[key].close(); page[key] = null; }
  }
  for (const id of ["serial", "vnc-screen"]) document.getElementById(id).hidden = true;
}

async function openConsole(key, id, open) {
  if (!page) return;
  const { name } = page;
  if (page[key]) { page[key].close(); page[key] = null; }
  const container = document.getElementById(id);
  container.hidden = false;
  container.dataset.state = "opening";
  try {
    const handle = await open(container, name, (state) => {
      container.dataset.state = state;
      notice(`${name}: ${key === "serial" ? "serial console" : "VNC"} ${state}`);
    });
    if (page && page.name === name) page[key] = handle; else handle.close();
  } catch (error) {
    container.dataset.state = "failed";
    notice(`${name}: ${error.message}`, true);
  }
}

export function showVM(name, me) {
  leaveVM();
  page = { name, me, timer: setInterval(drawVM, REFRESH_MS), serial: null, vnc: null };
  document.getElementById("vm-name").textContent = name;
  document.querySelector("#vm-fields tbody").replaceChildren();
  document.querySelector("#vm-events tbody").replaceChildren();
  document.getElementById("open-serial").hidden = !mayRead(me);
  document.getElementById("open-vnc").hidden = !mayRead(me);
  drawVM();
}

export function leaveVM() {
  if (!page) return;
  clearInterval(page.timer);
  closeConsoles();
  page = null;
}

document.getElementById("open-serial").addEventListener("click", () => openConsole("serial", "serial", openSerial));
document.getElementById("open-vnc").addEventListener("click", () => openConsole("vnc", "vnc-screen", openVNC));
document.getElementById("close-consoles").addEventListener("click", closeConsoles);
