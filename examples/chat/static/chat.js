// The chat page: receives the room by long polling or by WebSocket (the
// toggle switches at any time) and never misses or repeats a message,
// because both transports resume after the id of the last one shown.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const messages = $("messages");
  const statusBox = $("status");
  const statusText = $("status-text");
  const input = $("message-input");
  const sendButton = $("send-button");
  const RETRY_MS = [500, 1000, 2000, 4000];

  const state = {
    name: null,
    cursor: 0,          // id of the last message shown
    transport: null,    // "ws" or "poll"
    generation: 0,      // bumped on every switch: stale callbacks check it
    ws: null,
    poll: null,
  };

  function setStatus(kind, text) {
    statusBox.className = "status " + kind;
    statusText.textContent = text;
  }

  function colour(name) {
    let h = 0;
    for (const c of name) h = (h * 31 + c.codePointAt(0)) % 360;
    return "hsl(" + h + ", 55%, 48%)";
  }

  function node(tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function render(message) {
    const data = message.data;
    const empty = $("empty");
    if (empty) empty.remove();
    const row = node("div", "message" + (data.name === state.name ? " mine" : ""));
    row.dataset.id = message.id;
    row.dataset.received = state.transport;
    row.dataset.name = data.name;
    const avatar = node("div", "avatar", data.name.slice(0, 1).toUpperCase());
    avatar.style.background = colour(data.name);
    const bubble = node("div", "bubble");
    const meta = node("div", "meta");
    meta.appendChild(node("span", "name", data.name));
    const when = new Date(data.time);
    meta.appendChild(node("span", "time", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    bubble.appendChild(meta);
    bubble.appendChild(node("div", "text", data.text));
    row.appendChild(avatar);
    row.appendChild(bubble);
    messages.appendChild(row);
    messages.scrollTop = messages.scrollHeight;
  }

  // ``first``: the first message(s) of a new request or connection. If
  // they are not newer than the cursor the server was restarted (its ids
  // began again): show them and follow the new numbering.
  function receive(list, first) {
    if (first && list.length && list[0].id <= state.cursor) state.cursor = list[0].id - 1;
    for (const message of list) {
      if (message.id <= state.cursor) continue;
      state.cursor = message.id;
      render(message);
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function pollLoop(gen) {
    let failures = 0;
    while (gen === state.generation) {
      const controller = new AbortController();
      state.poll = controller;
      setStatus("live-poll", "Live · long polling");
      try {
        const response = await fetch("/a/message/updates?cursor=" + state.cursor, {
          signal: controller.signal, cache: "no-store",
        });
        if (!response.ok) throw new Error("HTTP " + response.status);
        const list = await response.json();
        if (gen !== state.generation) return;
        failures = 0;
        receive(list, true);
      } catch (err) {
        if (gen !== state.generation) return;
        setStatus("connecting", "Reconnecting…");
        await sleep(RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)]);
      }
    }
  }

  function connectSocket(gen, failures) {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws?cursor=" + state.cursor);
    let first = true;
    state.ws = ws;
    ws.onopen = () => {
      if (gen !== state.generation) return;
      failures = 0;
      setStatus("live-ws", "Live · WebSocket");
    };
    ws.onmessage = (event) => {
      if (gen !== state.generation) return;
      receive([JSON.parse(event.data)], first);
      first = false;
    };
    ws.onclose = () => {
      if (gen !== state.generation) return;
      setStatus("connecting", "Reconnecting…");
      const delay = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
      setTimeout(() => { if (gen === state.generation) connectSocket(gen, failures + 1); }, delay);
    };
  }

  function useTransport(transport) {
    if (transport !== "poll" && !("WebSocket" in window)) transport = "poll";
    const gen = ++state.generation;
    if (state.poll) { state.poll.abort(); state.poll = null; }
    if (state.ws) { const ws = state.ws; state.ws = null; ws.onclose = null; ws.close(); }
    state.transport = transport;
    try { localStorage.setItem("chat.transport", transport); } catch (err) { /* private mode */ }
    for (const button of document.querySelectorAll(".toggle button")) {
      button.classList.toggle("active", button.dataset.transport === transport);
    }
    setStatus("connecting", "Connecting…");
    if (transport === "ws") connectSocket(gen, 0); else pollLoop(gen);
  }

  async function send(text) {
    const payload = JSON.stringify({ name: state.name, text: text });
    if (state.transport === "ws" && state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(payload);
      return true;
    }
    const response = await fetch("/a/message/new", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: payload,
    });
    return response.ok;
  }

  function join(name) {
    state.name = name;
    try { localStorage.setItem("chat.name", name); } catch (err) { /* private mode */ }
    $("me").textContent = name;
    for (const row of messages.querySelectorAll(".message")) {
      row.classList.toggle("mine", row.dataset.name === name);
    }
    $("join").classList.add("hidden");
    input.disabled = false;
    sendButton.disabled = false;
    input.focus();
  }

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("name-input").value.trim();
    if (name) join(name);
  });

  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || !state.name) return;
    input.value = "";
    try {
      if (!(await send(text))) input.value = text;
    } catch (err) {
      input.value = text;
    }
  });

  for (const button of document.querySelectorAll(".toggle button")) {
    button.addEventListener("click", () => useTransport(button.dataset.transport));
  }

  let saved = null;
  try { saved = localStorage.getItem("chat.transport"); } catch (err) { /* private mode */ }
  const requested = new URLSearchParams(location.search).get("transport");
  useTransport(requested || saved || document.body.dataset.transport || "ws");
  let savedName = null;
  try { savedName = localStorage.getItem("chat.name"); } catch (err) { /* private mode */ }
  if (savedName) $("name-input").value = savedName;
})();
