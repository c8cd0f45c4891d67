// Triage worklist page: polls /api/worklist and renders the table; no framework, no build step.
"use strict";

const REFRESH_MS = 5000;
const LABELS = { critical: "Critical", urgent: "Urgent", routine: "Routine" };

const state = { items: [], fetchedAt: 0, busy: false, again: false };
const $ = (id) => document.getElementById(id);

function humanDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function waitingNow(item) {
  // Acknowledged studies stop waiting; the others keep counting between refreshes.
  const extra = item.acknowledged ? 0 : (Date.now() - state.fetchedAt) / 1000;
  return item.waiting_seconds + extra;
}

function badge(item) {
  if (item.state === "failed") {
    const text = item.category ? `⚠ Failed · ${LABELS[item.category]}` : "⚠ Failed";
    return el("span", { class: "badge failed", text });
  }
  if (item.category) return el("span", { class: `badge ${item.category}`, text: LABELS[item.category] });
  if (item.state === "pending") return el("span", { class: "badge pending", text: "Processing" });
  return el("span", { class: "badge pending", text: "No result" });
}

function actions(item) {
  const cell = el("td", { class: "actions" });
  if (item.viewer_url) {
    cell.append(el("a", { href: item.viewer_url, target: "_blank", rel: "noopener", text: "Open in PACS",
                          "aria-label": `Open study ${item.accession_number || item.study_uid} in PACS` }));
  }
  if (item.acknowledged) {
    cell.append(el("span", { class: "acked-note", text: `Acknowledged by ${item.acknowledged_by} at ${clock(item.acknowledged_at)}` }));
  } else {
    const button = el("button", { type: "button", text: "Acknowledge", "data-ack": item.study_uid,
                                  "aria-label": `Acknowledge study ${item.accession_number || item.study_uid}` });
    button.addEventListener("click", () => acknowledge(item, button));
    cell.append(button);
  }
  return cell;
}

function row(item) {
  const classes = [`state-${item.state}`];
  if (item.category) classes.push(`cat-${item.category}`);
  if (item.acknowledged) classes.push("acked");
  const study = el("td", {},
    el("span", { text: item.study_description || "(no description)" }),
    item.patient_name ? el("span", { class: "sub", text: `${item.patient_name.replaceAll("^", " ").trim()} · ${item.patient_id}` }) : null,
    item.error ? el("span", { class: "error-text", text: item.error }) : null,
    ...(item.warnings || []).map((w) => el("span", { class: "warning-text", text: `⚠ ${w}` })));
  const thumb = item.thumbnail_url
    ? el("img", { class: "thumb", src: item.thumbnail_url, loading: "lazy", width: 96, height: 96,
                  alt: `Anomaly heat map, slice ${item.top_slice_index ?? "?"}` })
    : el("span", { class: "sub", text: "—" });
  return el("tr", { class: classes.join(" "), "data-study-uid": item.study_uid, "data-category": item.category ?? "" },
    el("td", {}, badge(item)),
    el("td", { class: "num", text: item.score === null ? "—" : item.score.toFixed(1) }),
    el("td", { class: "num waiting", text: humanDuration(waitingNow(item)) }),
    study,
    el("td", { text: item.accession_number || "—" }),
    el("td", {}, thumb),
    actions(item));
}

function render() {
  const tbody = document.querySelector("#worklist tbody");
  // Keep keyboard focus on the same control across refreshes.
  const focused = document.activeElement;
  const focusKey = focused && focused.closest ? focused.closest("tr")?.dataset.studyUid : null;
  const focusTag = focused ? focused.tagName : null;
  tbody.replaceChildren(...state.items.map(row));
  $("empty").hidden = state.items.length > 0;
  if (focusKey) {
    const target = tbody.querySelector(`tr[data-study-uid="${CSS.escape(focusKey)}"] ${focusTag === "A" ? "a" : "button"}`);
    if (target) target.focus();
  }
}

function tick() {
  const cells = document.querySelectorAll("#worklist tbody td.waiting");
  cells.forEach((cell, i) => { if (state.items[i]) cell.textContent = humanDuration(waitingNow(state.items[i])); });
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function refresh() {
  if (state.busy) {
    state.again = true;  // a filter changed mid-request: fetch again once this one is done
    return;
  }
  state.busy = true;
  const params = new URLSearchParams();
  if ($("category").value) params.set("category", $("category").value);
  if ($("state").value) params.set("state", $("state").value);
  if ($("hide-acked").checked) params.set("acknowledged", "false");
  try {
    const response = await fetch(`/api/worklist?${params}`, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      setStatus("Not signed in: open this page once as /?token=<token>.", true);
      return;
    }
    if (!response.ok) throw new Error(`server answered ${response.status}`);
    const body = await response.json();
    state.items = body.items;
    state.fetchedAt = Date.now();
    render();
    const unacked = state.items.filter((i) => !i.acknowledged).length;
    setStatus(`Updated ${new Date().toLocaleTimeString()} · ${state.items.length} studies, ${unacked} not acknowledged`);
  } catch (err) {
    setStatus(`Cannot reach the node (${err.message}); retrying.`, true);
  } finally {
    state.busy = false;
    if (state.again) {
      state.again = false;
      refresh();
    }
  }
}

async function acknowledge(item, button) {
  const reader = $("reader");
  const by = reader.value.trim();
  if (!by) {
    reader.classList.add("missing");
    reader.focus();
    setStatus("Enter your name under “Reading as” to acknowledge.", true);
    return;
  }
  button.disabled = true;
  try {
    const response = await fetch(`/api/worklist/${encodeURIComponent(item.study_uid)}/ack`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ by }),
    });
    if (!response.ok) throw new Error(`server answered ${response.status}`);
    const updated = await response.json();
    state.items = state.items.map((i) => (i.study_uid === updated.study_uid ? updated : i));
    render();
    setStatus(`Acknowledged ${updated.accession_number || updated.study_uid}.`);
  } catch (err) {
    button.disabled = false;
    setStatus(`Acknowledgement failed (${err.message}).`, true);
  }
}

function init() {
  const reader = $("reader");
  reader.value = localStorage.getItem("dicomnode.reader") || "";
  reader.addEventListener("input", () => {
    reader.classList.remove("missing");
    localStorage.setItem("dicomnode.reader", reader.value.trim());
  });
  for (const id of ["category", "state", "hide-acked"]) $(id).addEventListener("change", refresh);
  refresh();
  setInterval(refresh, REFRESH_MS);
  setInterval(tick, 1000);
}

document.addEventListener("DOMContentLoaded", init);
