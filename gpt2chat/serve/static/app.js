// gpt2chat web chat: talks to this server's /v1/chat/completions (stream: true).
// The conversation lives only in this page: reloading it starts afresh.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    settings: null,
    messages: [], // {role: "user" | "assistant", content}
    controller: null, // AbortController of the reply being streamed
    epoch: 0, // bumped by "New conversation": late replies of an old one are dropped
  };

  function setStatus(text, isError = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", isError);
  }

  function numberInput(id) {
    const raw = $(id).value.trim();
    if (raw === "") return null;
    const value = Number(raw);
    return Number.isFinite(value) ? value : null;
  }

  function decoding() {
    const d = state.settings.defaults;
    const temperature = numberInput("temperature") ?? d.temperature;
    const topP = numberInput("top-p") ?? d.top_p;
    const maxTokens = numberInput("max-tokens") ?? d.max_tokens;
    const seed = numberInput("seed");
    return { temperature, top_p: topP, max_tokens: Math.round(maxTokens), seed };
  }

  function updateSummary() {
    if (!state.settings) return;
    const d = decoding();
    const parts = [];
    if (d.temperature === 0 || d.top_p === 0) parts.push("greedy");
    else parts.push(`temperature ${d.temperature}`, `top-p ${d.top_p}`);
    parts.push(`≤ ${d.max_tokens} tokens`);
    const fixed = state.settings.defaults;
    if (fixed.repetition_penalty) parts.push(`repetition penalty ${fixed.repetition_penalty}`);
    if (fixed.guidance_scale !== undefined && fixed.guidance_scale !== 1) {
      parts.push(`guidance ${fixed.guidance_scale}`);
    }
    if (fixed.num_candidates > 1 && parts[0] !== "greedy") {
      parts.push(`best of ${fixed.num_candidates}`);
    }
    if (d.seed !== null) parts.push(`seed ${d.seed}`);
    $("settings-summary").textContent = parts.join(" · ");
  }

  function authHeaders() {
    const key = $("api-key").value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  // With --api_key the settings are private: a 401 asks for the key, and entering it retries.
  async function loadSettings() {
    const response = await fetch("/api/settings", { cache: "no-store", headers: authHeaders() });
    if (response.status === 401) {
      $("api-key-row").hidden = false;
      $("settings").open = true;
      setStatus("This server requires an API key: enter it in the settings.", true);
      return false;
    }
    if (!response.ok) throw new Error(`cannot read /api/settings (${response.status})`);
    const s = await response.json();
    state.settings = s;
    $("model-name").textContent = s.model;
    document.title = `${s.model} · gpt2chat`;
    $("temperature").value = s.defaults.temperature;
    $("top-p").value = s.defaults.top_p;
    $("max-tokens").value = s.defaults.max_tokens;
    $("max-tokens").max = s.limits.max_tokens;
    if (s.persona) $("persona").placeholder = `server default: ${s.persona}`;
    $("api-key-row").hidden = !s.auth_required;
    if (s.auth_required) $("settings").open = true;
    setStatus("");
    updateSummary();
    return true;
  }

  function start() {
    loadSettings()
      .then((ready) => {
        if (!ready) return;
        document.body.dataset.ready = "true";
        $("message").focus();
      })
      .catch((err) => setStatus(`Error: ${err.message}`, true));
  }

  function scrollToEnd() {
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
  }

  function addBubble(role, text) {
    $("empty").hidden = true;
    const bubble = document.createElement("div");
    bubble.className = `msg ${role}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Bot";
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = text; // never innerHTML: replies are plain text
    bubble.append(who, body);
    $("messages").append(bubble);
    scrollToEnd();
    return bubble;
  }

  // The tail of the conversation that fits the server's limits (the model only reads the
  // last few turns anyway).
  function requestMessages(persona) {
    const limits = state.settings.limits;
    let roomMessages = limits.max_messages - (persona ? 1 : 0);
    let roomChars = limits.max_chars - persona.length;
    const tail = [];
    for (let i = state.messages.length - 1; i >= 0 && roomMessages > 0; i--) {
      const m = state.messages[i];
      if (m.content.length > roomChars) break;
      tail.unshift(m);
      roomMessages -= 1;
      roomChars -= m.content.length;
    }
    while (tail.length && tail[0].role !== "user") tail.shift();
    return persona ? [{ role: "system", content: persona }, ...tail] : tail;
  }

  function setBusy(busy) {
    document.body.classList.toggle("busy", busy);
    $("send").textContent = busy ? "Stop" : "Send";
    $("send").classList.toggle("stop", busy);
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (_) {
      /* not JSON */
    }
    return `HTTP ${response.status}`;
  }

  async function send(text) {
    const limits = state.settings.limits;
    if (text.length > limits.max_chars) {
      setStatus(`The message is too long (${text.length} > ${limits.max_chars} characters).`, true);
      return;
    }
    const epoch = state.epoch;
    const persona = $("persona").value.trim();
    state.messages.push({ role: "user", content: text });
    const question = addBubble("user", text);
    const bubble = addBubble("assistant", "");
    const body = bubble.querySelector(".text");
    bubble.dataset.state = "waiting";
    bubble.dataset.chunks = "0";

    const d = decoding();
    const payload = {
      model: state.settings.model,
      messages: requestMessages(persona),
      temperature: d.temperature,
      top_p: d.top_p,
      max_tokens: d.max_tokens,
      stream: true,
    };
    if (d.seed !== null) payload.seed = Math.round(d.seed);
    const headers = { "Content-Type": "application/json", ...authHeaders() };

    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    setStatus("");
    let reply = "";
    let chunks = 0;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers,
        body: JSON.stringify(payload),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            const message = JSON.parse(data);
            if (message.error) throw new Error(message.error.message);
            const piece = message.choices && message.choices[0] && message.choices[0].delta.content;
            if (piece) {
              reply += piece;
              chunks += 1;
              body.textContent = reply;
              bubble.dataset.state = "streaming";
              bubble.dataset.chunks = String(chunks);
              scrollToEnd();
            }
          }
        }
      }
      if (epoch !== state.epoch) return;
      bubble.dataset.state = "done";
      if (!reply) body.textContent = "(empty reply)";
      state.messages.push({ role: "assistant", content: reply });
    } catch (err) {
      if (epoch !== state.epoch) return;
      if (err.name === "AbortError") {
        bubble.dataset.state = "stopped";
        state.messages.push({ role: "assistant", content: reply });
        if (!reply) body.textContent = "(stopped)";
      } else {
        // The failed turn is not part of the conversation: take it back, keep the text to retry.
        state.messages.pop();
        question.remove();
        bubble.remove();
        if (!state.messages.length) $("empty").hidden = false;
        if (!$("message").value) {
          $("message").value = text;
          autosize();
        }
        setStatus(`Error: ${err.message}`, true);
      }
    } finally {
      if (state.controller === controller) {
        state.controller = null;
        setBusy(false);
      }
    }
  }

  function newConversation() {
    state.epoch += 1;
    if (state.controller) state.controller.abort();
    state.controller = null;
    state.messages = [];
    for (const el of $("messages").querySelectorAll(".msg")) el.remove();
    $("empty").hidden = false;
    setBusy(false);
    setStatus("");
    $("message").value = "";
    autosize();
    $("message").focus();
  }

  function autosize() {
    const box = $("message");
    box.style.height = "auto";
    box.style.height = `${Math.min(box.scrollHeight, 160)}px`;
  }

  function submit() {
    if (state.controller) {
      state.controller.abort();
      return;
    }
    const text = $("message").value;
    if (!text.trim() || !state.settings) return;
    $("message").value = "";
    autosize();
    send(text);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      submit();
    });
    $("message").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submit();
      }
    });
    $("message").addEventListener("input", autosize);
    $("new-chat").addEventListener("click", newConversation);
    for (const id of ["temperature", "top-p", "max-tokens", "seed"]) {
      $(id).addEventListener("input", updateSummary);
    }
    $("api-key").addEventListener("change", () => {
      if (!state.settings) start();
    });
    start();
  });
})();
