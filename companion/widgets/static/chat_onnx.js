/* In-page chat with the book's tiny models: byte-level BPE and greedy decoding with onnxruntime-web.
 *
 * The files come from `companion export-web` and the book build (see the Makefile), in _static/chat/:
 *   manifest.json    the models, the tokenizer file, the stop ids and the chat format
 *   bpe.json         vocab (by id), merges, special tokens, the pre-tokenizer regex
 *   recorded.json    every model's recorded greedy answers to a few prompts
 *   {stage}.*.onnx   input_ids int64 [1, T] -> logits float32 [1, vocab] of the last position
 *   ort/             onnxruntime-web from the npm registry (ort.wasm.min.js and its .mjs/.wasm)
 *
 * Two ways in:
 *   CompanionChat.attach(root)  wires the Ask box of a chat_widget() output (companion/widgets/chat.py);
 *   <div class="companion-chat"></div> in a page is filled with a chat box (recorded answers from
 *   recorded.json), unless the page already shows a chat_widget() output.
 * When the models cannot load, the box says so and keeps the recorded answers.
 */
(function () {
  'use strict';

  const SCRIPT = document.currentScript;

  /** URL of the _static/chat/ folder, from this script's own URL (or Sphinx's content root). */
  function chatBase() {
    if (SCRIPT && SCRIPT.src) return new URL('chat/', SCRIPT.src).href;
    const root = document.documentElement.dataset.content_root || './';
    return new URL(root + '_static/chat/', window.location.href).href;
  }

  // ---------------------------------------------------------------- byte-level BPE (GPT-2 style)

  /** GPT-2's byte -> printable character table (the tokenizers library's ByteLevel alphabet). */
  function bytesToUnicode() {
    const bs = [];
    for (let b = 33; b <= 126; b++) bs.push(b);
    for (let b = 161; b <= 172; b++) bs.push(b);
    for (let b = 174; b <= 255; b++) bs.push(b);
    const cs = bs.slice();
    let n = 0;
    for (let b = 0; b < 256; b++) {
      if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); n++; }
    }
    const table = new Array(256);
    bs.forEach((b, i) => { table[b] = String.fromCodePoint(cs[i]); });
    return table;
  }

  function escapeRegExp(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

  class BPETokenizer {
    /** data: bpe.json, {vocab: [token by id], merges: ["a b", ...], special_tokens: {text: id}, pattern}. */
    constructor(data) {
      this.vocab = data.vocab;
      this.ids = new Map(data.vocab.map((t, i) => [t, i]));
      this.ranks = new Map(data.merges.map((m, i) => [m, i]));
      this.special = new Map(Object.entries(data.special_tokens));
      this.specialIds = new Set(this.special.values());
      this.pattern = new RegExp(data.pattern, 'gu');
      const names = [...this.special.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
      this.specialPattern = names.length ? new RegExp('(' + names.join('|') + ')') : null;
      this.byteToChar = bytesToUnicode();
      this.charToByte = new Map(this.byteToChar.map((c, b) => [c, b]));
      this.encoder = new TextEncoder();
      this.decoder = new TextDecoder('utf-8');
      this.cache = new Map();
    }

    /** Merge the characters of one pre-token by merge rank, lowest first. */
    bpe(word) {
      if (this.cache.has(word)) return this.cache.get(word);
      let parts = Array.from(word);
      while (parts.length > 1) {
        let best = -1, bestRank = Infinity;
        for (let i = 0; i < parts.length - 1; i++) {
          const rank = this.ranks.get(parts[i] + ' ' + parts[i + 1]);
          if (rank !== undefined && rank < bestRank) { bestRank = rank; best = i; }
        }
        if (best < 0) break;
        const a = parts[best], b = parts[best + 1], merged = [];
        for (let i = 0; i < parts.length; i++) {
          if (i < parts.length - 1 && parts[i] === a && parts[i + 1] === b) { merged.push(a + b); i++; }
          else merged.push(parts[i]);
        }
        parts = merged;
      }
      this.cache.set(word, parts);
      return parts;
    }

    /** Ids of text that holds no special token. */
    encodeOrdinary(text) {
      const out = [];
      for (const match of text.matchAll(this.pattern)) {
        const chars = Array.from(this.encoder.encode(match[0]), (b) => this.byteToChar[b]).join('');
        for (const piece of this.bpe(chars)) {
          const id = this.ids.get(piece);
          if (id === undefined) throw new Error('token ' + JSON.stringify(piece) + ' is not in the vocabulary');
          out.push(id);
        }
      }
      return out;
    }

    /** Ids of text; special tokens written in the text (e.g. <|im_start|>) become their ids. */
    encode(text) {
      if (!this.specialPattern) return this.encodeOrdinary(text);
      const out = [];
      text.split(this.specialPattern).forEach((part, i) => {
        if (i % 2 === 1) out.push(this.special.get(part));
        else if (part) out.push(...this.encodeOrdinary(part));
      });
      return out;
    }

    /** Text of ids, special tokens dropped (like decode(..., skip_special_tokens=True)). */
    decode(ids) {
      const chars = ids.filter((id) => !this.specialIds.has(id)).map((id) => this.vocab[id]).join('');
      const bytes = Uint8Array.from(Array.from(chars), (c) => this.charToByte.get(c));
      return this.decoder.decode(bytes);
    }
  }

  // ---------------------------------------------------------------- models and greedy decoding

  async function fetchJSON(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(url + ': HTTP ' + response.status);
    return response.json();
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const tag = document.createElement('script');
      tag.src = src;
      tag.onload = resolve;
      tag.onerror = () => reject(new Error('could not load ' + src));
      document.head.appendChild(tag);
    });
  }

  let manifestPromise = null;
  let runtimePromise = null;

  /** manifest.json of the page's models (fetched once). */
  function manifest() {
    if (!manifestPromise) manifestPromise = fetchJSON(chatBase() + 'manifest.json');
    return manifestPromise;
  }

  /** onnxruntime-web, the tokenizer and one session per model (loaded once, on the first question). */
  function runtime() {
    if (!runtimePromise) runtimePromise = (async () => {
      const base = chatBase();
      const info = await manifest();
      if (!info.models || !info.models.length) throw new Error('no models were exported for this page');
      if (!window.ort) await loadScript(base + 'ort/ort.wasm.min.js');
      window.ort.env.wasm.wasmPaths = base + 'ort/';
      window.ort.env.wasm.numThreads = 1;
      window.ort.env.wasm.proxy = false;
      const tokenizer = new BPETokenizer(await fetchJSON(base + info.tokenizer));
      const models = [];
      for (const m of info.models) {
        const session = await window.ort.InferenceSession.create(base + m.file, {executionProviders: ['wasm']});
        models.push(Object.assign({session}, m));
      }
      return {info, tokenizer, models};
    })();
    return runtimePromise;
  }

  /** Prompt ids of one user question in the chat format, ending with the assistant header. */
  function promptIds(rt, question) {
    const format = rt.info.chat_format;
    return rt.tokenizer.encode(format.user.replace('{content}', () => question) + format.assistant);
  }

  /** Greedy continuation of ids: stops at a stop id, after maxNew tokens, or when the context is full. */
  async function greedy(session, ids, maxNew, stopIds, context) {
    const seq = ids.slice(), out = [];
    while (out.length < maxNew && (!context || seq.length < context)) {
      const input = new window.ort.Tensor('int64', BigInt64Array.from(seq, BigInt), [1, seq.length]);
      const logits = (await session.run({input_ids: input})).logits.data;
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      seq.push(best);
      out.push(best);
      if (stopIds.includes(best)) break;
    }
    return out;
  }

  /** Every model's greedy answer to question; onAnswer(label, text) is called as each one is ready. */
  async function ask(question, onAnswer) {
    const rt = await runtime();
    const ids = promptIds(rt, question), answers = {};
    for (const m of rt.models) {
      const started = performance.now();
      const out = await greedy(m.session, ids, rt.info.max_new_tokens, rt.info.stop_ids, rt.info.context_length);
      answers[m.label] = rt.tokenizer.decode(out).trim();
      if (onAnswer) onAnswer(m.label, answers[m.label], (performance.now() - started) / 1000);
    }
    return answers;
  }

  // ---------------------------------------------------------------- the chat box

  function element(tag, attrs, text) {
    const el = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => el.setAttribute(k, v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  /** A table with one column per model: {table, cells: {label: td}}. */
  function answerTable(labels, cellClass) {
    const table = element('table', {style: 'width:100%'});
    const head = table.insertRow(), row = table.insertRow(), cells = {};
    labels.forEach((label) => {
      head.appendChild(element('th', {}, label));
      cells[label] = row.insertCell();
      cells[label].className = cellClass;
      cells[label].setAttribute('data-model', label);
      cells[label].style.cssText = 'vertical-align:top; white-space:pre-wrap; width:' +
        Math.floor(100 / Math.max(1, labels.length)) + '%';
    });
    return {table, cells};
  }

  /** Wire the Ask box (.cw-question, .cw-ask, .cw-note, .cw-live) of a chat box to the in-page models. */
  function attach(root) {
    const input = root.querySelector('.cw-question'), button = root.querySelector('.cw-ask');
    const note = root.querySelector('.cw-note'), live = root.querySelector('.cw-live');
    input.disabled = button.disabled = true;
    note.textContent = 'Looking for the in-page models...';
    manifest().then((info) => {
      if (!info.models || !info.models.length) throw new Error('no models were exported for this page');
      const mb = info.models.reduce((s, m) => s + m.bytes, 0) / 1e6;
      input.disabled = button.disabled = false;
      note.textContent = 'Ask runs ' + info.models.map((m) => m.label).join(', ') + ' in your browser (onnxruntime-web, ' +
        'greedy, ' + info.max_new_tokens + ' tokens at most; the first question downloads about ' +
        Math.round(mb + 14) + ' MB).';
    }).catch((err) => {
      note.textContent = 'The in-page models are unavailable (' + err.message + '); the recorded answers above stay.';
    });
    async function run() {
      const question = input.value.trim();
      if (!question) { note.textContent = 'Type a question first.'; return; }
      input.disabled = button.disabled = true;
      root.setAttribute('data-state', 'running');
      try {
        note.textContent = 'Loading the models...';
        const info = await manifest();
        const {table, cells} = answerTable(info.models.map((m) => m.label), 'cw-live-reply');
        live.replaceChildren(element('div', {class: 'cw-row'}, 'Your question: ' + question), table);
        Object.values(cells).forEach((td) => { td.textContent = '...'; });
        await runtime();
        note.textContent = 'Thinking...';
        await ask(question, (label, text, seconds) => {
          cells[label].textContent = text || '(an empty answer)';
          cells[label].title = seconds.toFixed(1) + ' s';
        });
        note.textContent = 'Answered in your browser by the exported models (greedy, as in chapter 4).';
        root.setAttribute('data-state', 'answered');
      } catch (err) {
        note.textContent = 'The in-page models are unavailable (' + err.message + '); the recorded answers above stay.';
        live.replaceChildren();
        root.setAttribute('data-state', 'failed');
      } finally {
        input.disabled = button.disabled = root.getAttribute('data-state') === 'failed';
      }
    }
    button.addEventListener('click', run);
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter') run(); });
  }

  /** The look of companion.widgets.html's boxes, for a box this script builds. */
  function addStyle() {
    if (document.getElementById('companion-chat-style')) return;
    const style = element('style', {id: 'companion-chat-style'});
    style.textContent = '.cw-box {font-family: system-ui, sans-serif; font-size: 14px; border: 1px solid #ddd;' +
      ' border-radius: 8px; padding: 12px; margin: 8px 0; max-width: 760px;}' +
      ' .cw-box label {margin-right: 8px;} .cw-box .cw-row {margin: 6px 0;} .cw-box .cw-muted {color: #666;}' +
      ' .cw-box table {border-collapse: collapse;}' +
      ' .cw-box td, .cw-box th {padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left;}';
    document.head.appendChild(style);
  }

  /** The recorded part of a chat box: a prompt picker and one answer per model. */
  function recordedPart(data) {
    const part = element('div');
    const row = element('div', {class: 'cw-row'});
    row.appendChild(element('label', {}, 'Prompt:'));
    const select = element('select', {class: 'cw-prompt'});
    data.prompts.forEach((p, i) => select.appendChild(element('option', {value: String(i)}, p)));
    row.appendChild(select);
    const {table, cells} = answerTable(data.models, 'cw-reply');
    const show = () => data.models.forEach((m) => { cells[m].textContent = data.replies[m][+select.value]; });
    select.addEventListener('change', show);
    show();
    part.append(row, table);
    return part;
  }

  /** Fill a <div class="companion-chat"> with a chat box (or hide it when a chat_widget() output is on the page). */
  async function mount(div) {
    if (document.querySelector('.cw-chat[data-source="notebook"]')) { div.style.display = 'none'; return; }
    addStyle();
    const box = element('div', {class: 'cw-box cw-chat', 'data-source': 'page'});
    box.appendChild(element('div', {}, '')).appendChild(element('b', {}, "Ask each stage's model"));
    const recorded = element('div', {class: 'cw-recorded'}, 'Loading the recorded answers...');
    const askRow = element('div', {class: 'cw-row'});
    askRow.append(element('input', {class: 'cw-question', type: 'text', size: '60',
                                 placeholder: 'Tell me a story about Lily and a boat.'}),
               element('button', {class: 'cw-ask', type: 'button'}, 'Ask'));
    box.append(recorded, askRow, element('div', {class: 'cw-note cw-muted'}), element('div', {class: 'cw-live'}));
    div.replaceChildren(box);
    attach(box);
    try {
      const info = await manifest();
      if (!info.recorded) throw new Error('no models were exported for this page');
      recorded.replaceChildren(element('div', {class: 'cw-muted'}, 'Recorded greedy answers of the models below:'),
                               recordedPart(await fetchJSON(chatBase() + info.recorded)));
    } catch (err) {
      recorded.textContent = 'No recorded answers (' + err.message + '): this build of the book exported no ' +
        'models (`make book` does, after running the chapters). With a kernel, chat.ask(...) asks the live models.';
    }
  }

  function mountAll() { document.querySelectorAll('.companion-chat').forEach(mount); }

  window.CompanionChat = {BPETokenizer, attach, ask, runtime, manifest, chatBase, mount};
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mountAll);
  else mountAll();
})();
