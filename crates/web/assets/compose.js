// The compose demo (issue #5): each typed recipient becomes a chip with its
// symbol, status text and details; chips that start as "SSL ?" update in
// place from the event stream (/api/v1/events). Whether a recipient may be
// sent to is the server's answer (`sendable`, `blocked_reason`): no rule
// is repeated here. Text goes into the page only through textContent, never
// as markup.
"use strict";
(function () {
  const form = document.getElementById("compose");
  if (!form) return;
  const sendButton = document.getElementById("send");
  const sendStatus = document.getElementById("send-status");
  const chips = new Map(); // key "field:address" -> {el, address, answer}
  let tipCounter = 0;
  let events = null;

  const SYMBOLS = {
    dane: "👍", tls: "👍", none: "✗", unknown: "?", problem: "⚠",
  };

  function levelClass(answer) {
    if (!answer) return "unknown";
    if (answer.problem) return "problem";
    return answer.level;
  }

  // The server's text beside the symbol (the status, or why mail would
  // not be delivered).
  function headline(answer) {
    return (answer && answer.headline) || "SSL ?";
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function addRow(dl, key, value) {
    dl.appendChild(el("dt", "", key));
    dl.appendChild(el("dd", "", value));
  }

  function render(chip) {
    const a = chip.answer;
    const cls = levelClass(a);
    const e = chip.el;
    e.className = "chip level-" + cls;
    e.dataset.level = a ? a.level : "unknown";
    e.replaceChildren();
    const sym = el("span", "sym sym-" + cls, SYMBOLS[cls] || "?");
    sym.setAttribute("role", "img");
    sym.setAttribute("aria-label", headline(a));
    e.appendChild(sym);
    if (cls === "dane") e.appendChild(el("span", "badge", "DANE"));
    e.appendChild(el("span", "addr", chip.address));
    e.appendChild(el("span", "status", headline(a)));
    if (a && a.sendable === false) {
      e.classList.add("blocked");
      e.appendChild(el("span", "blocked-mark", "⛔ blocked"));
    }
    const remove = el("button", "remove", "×");
    remove.type = "button";
    remove.setAttribute("aria-label", "Remove " + chip.address);
    remove.addEventListener("click", () => {
      chips.delete(chip.key);
      e.remove();
      update();
    });
    e.appendChild(remove);

    const tip = el("span", "tip");
    tip.id = chip.tipId;
    tip.setAttribute("role", "tooltip");
    const dl = el("dl");
    const d = (a && a.details) || {};
    addRow(dl, "Status", headline(a));
    addRow(dl, "TLS version", d.tls_version || "—");
    addRow(dl, "Cipher", d.cipher || "—");
    addRow(dl, "DANE", d.dane || "—");
    addRow(dl, "Last seen", d.last_seen || (a && a.pending ? "checking now…" : "never"));
    if (a && a.detail) addRow(dl, "Detail", a.detail);
    if (a && a.blocked_reason) addRow(dl, a.sendable === false ? "Blocked" : "Note", a.blocked_reason);
    tip.appendChild(dl);
    e.appendChild(tip);
  }

  function addChip(field, raw) {
    const address = raw.trim().replace(/[,;]+$/, "").trim();
    if (!address) return;
    const key = field + ":" + address.toLowerCase();
    if (chips.has(key)) return;
    const list = form.querySelector('.recipients[data-field="' + field + '"] .chips');
    const e = el("span", "chip level-unknown");
    e.tabIndex = 0;
    e.setAttribute("role", "listitem");
    e.dataset.address = address;
    const chip = { key, el: e, address, answer: null, tipId: "tip-" + (++tipCounter) };
    e.setAttribute("aria-describedby", chip.tipId);
    chips.set(key, chip);
    list.appendChild(e);
    render(chip);
    update();
    fetch("/api/v1/check?address=" + encodeURIComponent(address), { credentials: "same-origin" })
      .then((r) => r.json().then((body) => ({ ok: r.ok, body })))
      .then(({ ok, body }) => {
        if (!ok) {
          chip.answer = { level: "unknown", headline: "SSL ?", detail: body.error || "error", details: {} };
        } else {
          chip.answer = body[0];
        }
        render(chip);
        update();
        listen();
      })
      .catch(() => {});
  }

  function pendingAddresses() {
    const out = new Set();
    for (const c of chips.values()) {
      if (c.answer && c.answer.pending) out.add(c.address);
    }
    return [...out];
  }

  // One event stream for every pending chip (browsers allow few
  // connections per server).
  function listen() {
    const pending = pendingAddresses();
    if (events) { events.close(); events = null; }
    if (pending.length === 0) return;
    const q = pending.map((a) => "address=" + encodeURIComponent(a)).join("&");
    events = new EventSource("/api/v1/events?" + q);
    events.addEventListener("check", (ev) => {
      let answer;
      try { answer = JSON.parse(ev.data); } catch (e) { return; }
      for (const c of chips.values()) {
        if (c.address.toLowerCase() === String(answer.address).toLowerCase() ||
            (c.answer && c.answer.address === answer.address)) {
          c.answer = answer;
          render(c);
        }
      }
      update();
    });
    events.addEventListener("done", () => {
      if (events) { events.close(); events = null; }
    });
    events.onerror = () => {
      if (events) { events.close(); events = null; }
    };
  }

  function update() {
    const blocked = [...chips.values()].filter((c) => c.answer && c.answer.sendable === false);
    if (blocked.length > 0) {
      sendButton.disabled = true;
      sendStatus.className = "send-status blocked";
      sendStatus.textContent = "Sending is blocked: " +
        blocked.map((c) => c.address + " — " + (c.answer.blocked_reason || "cannot be reached securely")).join("; ");
    } else {
      sendButton.disabled = false;
      sendStatus.className = "send-status";
      sendStatus.textContent = "";
    }
  }

  for (const box of form.querySelectorAll(".recipients")) {
    const field = box.dataset.field;
    const input = box.querySelector("input");
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === "," || ev.key === ";" || (ev.key === "Tab" && input.value.trim())) {
        if (input.value.trim()) {
          ev.preventDefault();
          addChip(field, input.value);
          input.value = "";
        } else if (ev.key === "Enter") {
          ev.preventDefault();
        }
      } else if (ev.key === "Backspace" && !input.value) {
        const last = box.querySelector(".chip:last-of-type");
        if (last) last.focus();
      }
    });
    input.addEventListener("blur", () => {
      if (input.value.trim()) {
        addChip(field, input.value);
        input.value = "";
      }
    });
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (sendButton.disabled) return;
    sendStatus.className = "send-status";
    sendStatus.textContent = chips.size === 0
      ? "Add a recipient first."
      : "This demo does not send mail; every recipient can be reached as your settings require.";
  });
})();
