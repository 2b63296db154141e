// toolgate dashboard: plain JavaScript, no build step, no network beyond
// the gateway's own admin listener. Every /api and /approvals call sends
// the admin token (kept in sessionStorage after sign-in). Data from the
// gateway is only ever put on the page as text (textContent), never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "toolgate-admin-token";
  const POLL_MS = 1000;
  const VALIDATE_DELAY_MS = 250;

  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    tab: "catalogue",
    catalogue: null,
    policies: [],
    policy: null, // the selected policy file, as /api/policies gave it
    edits: new Map(), // tool name -> rule object, or null to remove the rule
    selectedTool: "",
    render: null, // the last /api/policies/render answer
    renderSeq: 0,
    previewFormat: "json",
    traffic: { records: [], last: null, key: "", shown: false, counters: null },
    pollTimer: null,
    reachable: true,
  };

  // --- helpers ---------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function table(headers, rows, caption) {
    const t = el("table");
    if (caption) t.append(el("caption", { class: "visually-hidden", text: caption }));
    const head = el("tr");
    for (const h of headers) head.append(el("th", { scope: "col", text: h }));
    t.append(el("thead", {}, head));
    const body = el("tbody");
    for (const r of rows) body.append(r);
    t.append(body);
    return t;
  }

  function time(ms) {
    if (!ms) return "";
    const d = new Date(ms);
    return d.toLocaleString();
  }

  class HttpError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || "HTTP " + status);
      this.status = status;
      this.body = body;
    }
  }

  class Unreachable extends Error {}

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + state.token };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      unreachable(e);
      throw new Unreachable(String(e));
    }
    reachableAgain();
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (response.status === 401) {
      signedOut("The admin token was refused (401): it is not this gateway's admin token. Sign in again.");
      throw new HttpError(401, data);
    }
    if (!response.ok) throw new HttpError(response.status, data);
    return data;
  }

  function banner(text, kind) {
    const b = $("banner");
    if (!text) {
      b.hidden = true;
      b.textContent = "";
      return;
    }
    b.className = "banner " + (kind || "error");
    b.textContent = text;
    b.hidden = false;
  }

  function unreachable(e) {
    state.reachable = false;
    banner(
      "Cannot reach the gateway at " + location.origin + " (" + (e && e.message ? e.message : e) +
        "). Is it running? The page keeps trying.",
      "error"
    );
  }

  function reachableAgain() {
    if (!state.reachable) {
      state.reachable = true;
      banner("");
    }
  }

  function report(e) {
    if (e instanceof Unreachable) return;
    if (e instanceof HttpError && e.status === 401) return;
    banner(e.message || String(e), "error");
  }

  // --- sign in / out -----------------------------------------------------------

  function showSignedIn(info) {
    $("signin").hidden = true;
    $("tabs").hidden = false;
    $("signout").hidden = false;
    $("mode").textContent = info ? "toolgate " + info.mode + " · " + info.version : "";
    selectTab(state.tab, false);
    startPolling();
  }

  function signedOut(message) {
    state.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    stopPolling();
    $("tabs").hidden = true;
    $("signout").hidden = true;
    $("mode").textContent = "";
    for (const p of document.querySelectorAll(".panel")) p.hidden = true;
    $("signin").hidden = false;
    const err = $("signin-error");
    if (message) {
      err.textContent = message;
      err.hidden = false;
    } else {
      err.hidden = true;
    }
    $("token").value = "";
    $("token").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    const err = $("signin-error");
    err.hidden = true;
    if (!token) return;
    let response;
    try {
      response = await fetch("/api/info", {
        headers: { Authorization: "Bearer " + token },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (e) {
      err.textContent = "Cannot reach the gateway at " + location.origin + ": is it running?";
      err.hidden = false;
      return;
    }
    if (response.status === 401) {
      err.textContent = "That token was refused: it is not the admin token.";
      err.hidden = false;
      $("token").select();
      return;
    }
    if (!response.ok) {
      err.textContent = "The gateway answered " + response.status + ".";
      err.hidden = false;
      return;
    }
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    showSignedIn(await response.json());
  }

  // --- tabs ----------------------------------------------------------------------

  const TABS = ["catalogue", "policy", "approvals", "traffic"];

  function selectTab(name, focus) {
    state.tab = name;
    for (const t of TABS) {
      const button = $("tab-" + t);
      const selected = t === name;
      button.setAttribute("aria-selected", String(selected));
      button.tabIndex = selected ? 0 : -1;
      $("panel-" + t).hidden = !selected;
      if (selected && focus) button.focus();
    }
    if (name === "catalogue") loadCatalogue();
    if (name === "policy") loadPolicyTab();
    if (name === "approvals") pollApprovals(true);
    if (name === "traffic") pollTraffic(true);
  }

  function tabKeys(event) {
    const i = TABS.indexOf(state.tab);
    let next = null;
    if (event.key === "ArrowRight") next = TABS[(i + 1) % TABS.length];
    else if (event.key === "ArrowLeft") next = TABS[(i + TABS.length - 1) % TABS.length];
    else if (event.key === "Home") next = TABS[0];
    else if (event.key === "End") next = TABS[TABS.length - 1];
    if (next) {
      event.preventDefault();
      selectTab(next, true);
    }
  }

  // --- catalogue -----------------------------------------------------------------

  async function loadCatalogue() {
    try {
      state.catalogue = await api("GET", "/api/catalogue");
    } catch (e) {
      report(e);
      return;
    }
    renderCatalogue();
  }

  function riskBadge(risk) {
    return el("span", { class: "risk risk-" + risk, text: risk });
  }

  function renderCatalogue() {
    const root = $("catalogue");
    clear(root);
    const servers = (state.catalogue && state.catalogue.servers) || [];
    if (servers.length === 0) {
      root.append(el("p", { text: "No servers." }));
      return;
    }
    for (const server of servers) {
      const heading = el("h3", {}, "Server ", el("code", { text: server.name }), " ",
        el("span", { class: "status status-" + server.status, text: server.status }));
      root.append(heading);
      if (server.error) root.append(el("p", { class: "error", text: server.error }));
      if (server.note) root.append(el("p", { class: "hint", text: server.note }));
      if (server.tools.length === 0) {
        if (!server.note) root.append(el("p", { class: "hint", text: server.status === "scanning" ? "Scanning…" : "No tools listed." }));
        continue;
      }
      const rows = server.tools.map((tool) => {
        const evidence = el("ul", { class: "evidence" });
        for (const e of tool.evidence) evidence.append(el("li", { text: e.source + ": " + e.detail }));
        const rules = el("ul", { class: "rules" });
        for (const r of tool.rules) {
          rules.append(el("li", {}, el("span", { class: "effect", text: r.effect }),
            el("span", { class: "hint", title: r.policy, text: " (" + (r.key === null || r.key === undefined ? "default" : "tools." + r.key) + " in " + r.policy.split("/").pop() + ")" })));
        }
        if (tool.rules.length === 0) rules.append(el("li", { class: "hint", text: "no policy names this server's tools" }));
        const edit = el("button", {
          type: "button",
          class: "secondary small",
          "data-tool": tool.name,
          "aria-label": "Edit the rule for " + tool.name,
          text: "Edit rule",
          onclick: () => editTool(tool),
        });
        return el("tr", { "data-tool": tool.name },
          el("td", {}, el("code", { text: tool.name }), el("div", { class: "hint", text: tool.description || "" })),
          el("td", { text: tool.category }),
          el("td", {}, riskBadge(tool.risk)),
          el("td", {}, evidence),
          el("td", {}, rules),
          el("td", {}, edit));
      });
      root.append(table(["Tool", "Category", "Risk", "Evidence", "Rule in force", ""], rows, "Tools of " + server.name));
    }
  }

  function editTool(tool) {
    state.pendingTool = tool;
    selectTab("policy", true);
  }

  // --- policy builder ------------------------------------------------------------

  function allTools() {
    const out = [];
    for (const s of (state.catalogue && state.catalogue.servers) || []) for (const t of s.tools) out.push(t);
    return out;
  }

  // The tools a policy file governs, each under the name that file uses.
  function toolsOf(policy) {
    const scope = policy ? policy.scope : { kind: "gateway" };
    return allTools()
      .filter((t) => scope.kind !== "server" || t.server === scope.name)
      .map((t) => ({
        tool: t,
        name: scope.kind === "server" ? t.original : t.name,
        recommended: scope.kind === "server" ? t.recommended_original : t.recommended,
      }));
  }

  async function loadPolicyTab() {
    if (!state.catalogue) await loadCatalogue();
    let answer;
    try {
      answer = await api("GET", "/api/policies");
    } catch (e) {
      report(e);
      return;
    }
    state.policies = answer.policies;
    const select = $("policy-file");
    const keep = state.policy ? state.policy.path : null;
    clear(select);
    for (const p of state.policies) {
      const label = p.path + " (" + (p.scope.kind === "gateway" ? "gateway" : p.scope.kind + " " + p.scope.name) + ")";
      select.append(el("option", { value: p.path, text: label }));
    }
    let chosen = state.policies.find((p) => p.path === keep) || state.policies[0] || null;
    if (state.pendingTool) {
      const t = state.pendingTool;
      const fits = state.policies.find((p) => p.scope.kind === "server" && p.scope.name === t.server) ||
        state.policies.find((p) => p.scope.kind === "gateway");
      if (!keep && fits) chosen = fits;
    }
    if (!chosen) {
      $("policy-status").textContent = "This gateway has no policy file the dashboard can edit.";
      return;
    }
    select.value = chosen.path;
    choosePolicy(chosen, state.policy && keep === chosen.path);
  }

  function choosePolicy(policy, keepEdits) {
    state.policy = policy;
    if (!keepEdits) state.edits = new Map();
    $("policy-status").textContent = policy.error ? policy.error : (policy.valid ? policy.summary : "This file is not valid now: the gateway keeps the policy it had.");
    $("policy-status").className = "status " + (policy.valid ? "ok" : "error");
    state.previewFormat = policy.format || "json";
    $("preview-note").textContent = "The file is " + (policy.format || "?").toUpperCase() + ": it is saved in that format.";
    const select = $("builder-tool");
    clear(select);
    const tools = toolsOf(policy);
    for (const t of tools) select.append(el("option", { value: t.name, text: t.name + " — " + t.tool.category + ", " + t.tool.risk }));
    let name = state.selectedTool;
    if (state.pendingTool) {
      const match = tools.find((t) => t.tool.name === state.pendingTool.name);
      if (match) name = match.name;
      state.pendingTool = null;
    }
    if (!tools.find((t) => t.name === name)) name = tools.length ? tools[0].name : "";
    select.value = name;
    selectTool(name);
    refreshPreview();
  }

  function baseDocument() {
    const doc = state.policy && state.policy.document;
    return doc && typeof doc === "object" && !Array.isArray(doc) ? doc : null;
  }

  function workingDocument() {
    const base = baseDocument();
    if (!base) return null;
    const doc = JSON.parse(JSON.stringify(base));
    for (const [name, rule] of state.edits) {
      if (rule === null) {
        if (doc.tools) delete doc.tools[name];
      } else {
        if (!doc.tools || typeof doc.tools !== "object") doc.tools = {};
        doc.tools[name] = rule;
      }
    }
    if (doc.tools && Object.keys(doc.tools).length === 0 && !(base.tools && Object.keys(base.tools).length === 0)) delete doc.tools;
    return doc;
  }

  function currentRule(name) {
    if (state.edits.has(name)) return state.edits.get(name);
    const base = baseDocument();
    return base && base.tools && Object.prototype.hasOwnProperty.call(base.tools, name) ? base.tools[name] : undefined;
  }

  function selectTool(name) {
    state.selectedTool = name;
    const entry = toolsOf(state.policy).find((t) => t.name === name);
    const facts = $("tool-facts");
    clear(facts);
    if (!entry) {
      fillForm(undefined, true);
      return;
    }
    facts.append(riskBadge(entry.tool.risk), " " + entry.tool.category + " · " + (entry.tool.description || ""));
    const rule = currentRule(name);
    if (rule === null && state.edits.has(name)) {
      facts.append(el("div", { class: "hint", text: "This tool's rule is removed in the draft: the policy's default applies." }));
      fillForm(undefined, false);
      $("rule-action").value = "none";
      updateFieldsets();
    } else if (rule === undefined || rule === null) {
      facts.append(el("div", { class: "hint", text: "No rule names this tool yet: the form shows the recommended rule. Change anything to add it." }));
      fillForm(entry.recommended, false);
    } else {
      fillForm(rule, false);
    }
  }

  // The rule being edited starts from this one, so fields the form does
  // not show (description, a limit's cost) are kept.
  let formBase = {};
  // Approval settings are written only when the rule had them or they were changed.
  let approvalTouched = false;

  function fillForm(rule, disabled) {
    formBase = rule ? JSON.parse(JSON.stringify(rule)) : {};
    const r = rule || {};
    $("rule-action").value = rule === undefined ? "allow" : (r.action || "allow");
    $("rule-reason").value = r.reason || "";
    const approval = r.approval || {};
    $("approval-via").value = (approval.via || ["client", "admin"]).join(",");
    $("approval-hold").value = approval.hold === undefined ? "30s" : String(approval.hold);
    $("approval-expires").value = approval.expires === undefined ? "10m" : String(approval.expires);
    approvalTouched = false;
    const limits = $("limits");
    clear(limits);
    for (const l of r.limits || []) addLimitRow(l);
    const conditions = $("conditions");
    clear(conditions);
    for (const c of r.conditions || []) addConditionRow(c);
    for (const node of $("rule-form").querySelectorAll("input, select, button")) {
      if (node.id !== "builder-tool") node.disabled = !!disabled;
    }
    updateFieldsets();
  }

  function updateFieldsets() {
    const action = $("rule-action").value;
    const admits = action === "allow" || action === "require_approval";
    $("limits-fieldset").disabled = !admits;
    $("approval-fieldset").hidden = action !== "require_approval";
    $("conditions-fieldset").disabled = !admits;
    $("rule-reason").disabled = action === "none";
  }

  let rowId = 0;

  function field(label, input) {
    const id = "f" + ++rowId;
    input.id = id;
    return el("span", { class: "field" }, el("label", { for: id, text: label }), input);
  }

  function addLimitRow(limit) {
    const l = limit || {};
    const window = l.window === undefined ? "minute" : String(l.window);
    const row = el("div", { class: "limit row" });
    row.dataset.extra = JSON.stringify(Object.fromEntries(Object.entries(l).filter(([k]) => !["counter", "max", "window", "scope"].includes(k))));
    const windowInput = el("input", { type: "text", list: "windows", value: window, class: "limit-window", autocomplete: "off" });
    row.append(
      field("Counter", el("input", { type: "text", class: "limit-counter", value: l.counter || (state.selectedTool + "_rate"), autocomplete: "off" })),
      field("Max", el("input", { type: "number", class: "limit-max", min: "0", step: "any", value: l.max === undefined ? 30 : l.max })),
      field("Window", windowInput),
      field("Scope", el("input", { type: "text", list: "scopes", class: "limit-scope", value: l.scope || "grant", autocomplete: "off" })),
      el("button", { type: "button", class: "secondary small", text: "Remove limit", onclick: () => { row.remove(); formChanged(); } })
    );
    $("limits").append(row);
  }

  function addConditionRow(condition) {
    const c = condition || {};
    const ops = ["eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains", "exists"];
    const op = el("select", { class: "cond-op" });
    for (const o of ops) op.append(el("option", { value: o, text: o }));
    op.value = c.op || "eq";
    const row = el("div", { class: "condition row" });
    row.append(
      field("Argument path", el("input", { type: "text", class: "cond-path", value: c.path || "args.", autocomplete: "off" })),
      field("Op", op),
      field("Value (JSON)", el("input", { type: "text", class: "cond-value", value: c.value === undefined ? "" : JSON.stringify(c.value), autocomplete: "off" })),
      field("Reason", el("input", { type: "text", class: "cond-reason", value: c.reason || "", autocomplete: "off" })),
      el("button", { type: "button", class: "secondary small", text: "Remove condition", onclick: () => { row.remove(); formChanged(); } })
    );
    $("conditions").append(row);
  }

  // A number where the text is one (the policy checks the rest).
  function numberOr(text) {
    const t = String(text).trim();
    return t !== "" && /^-?[0-9]+(\.[0-9]+)?$/.test(t) ? Number(t) : t;
  }

  function jsonOr(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return text;
    }
  }

  function ruleFromForm() {
    const action = $("rule-action").value;
    if (action === "none") return null;
    const rule = JSON.parse(JSON.stringify(formBase || {}));
    delete rule.action;
    delete rule.reason;
    delete rule.limits;
    delete rule.conditions;
    delete rule.approval;
    const out = {};
    if (action === "require_approval" && (approvalTouched || (formBase && formBase.approval))) {
      out.approval = Object.assign({}, (formBase && formBase.approval) || {}, {
        via: $("approval-via").value.split(","),
        hold: numberOr($("approval-hold").value),
        expires: numberOr($("approval-expires").value),
      });
    }
    if (action !== "allow") out.action = action;
    const reason = $("rule-reason").value;
    if (reason.trim() !== "") out.reason = reason;
    if (action === "allow" || action === "require_approval") {
      const limits = [];
      for (const row of $("limits").querySelectorAll(".limit")) {
        const limit = Object.assign({
          counter: row.querySelector(".limit-counter").value,
          window: numberOr(row.querySelector(".limit-window").value),
          max: numberOr(row.querySelector(".limit-max").value),
          scope: row.querySelector(".limit-scope").value,
        }, JSON.parse(row.dataset.extra || "{}"));
        limits.push(limit);
      }
      if (limits.length) out.limits = limits;
      const conditions = [];
      for (const row of $("conditions").querySelectorAll(".condition")) {
        const c = { path: row.querySelector(".cond-path").value, op: row.querySelector(".cond-op").value };
        const value = row.querySelector(".cond-value").value;
        if (value.trim() !== "") c.value = jsonOr(value);
        const why = row.querySelector(".cond-reason").value;
        if (why.trim() !== "") c.reason = why;
        conditions.push(c);
      }
      if (conditions.length) out.conditions = conditions;
    } else {
      delete rule.approval;
    }
    return Object.assign(rule, out);
  }

  function formChanged() {
    updateFieldsets();
    $("save-result").textContent = ""; // a new draft: the last save's message no longer applies
    if (!state.selectedTool || !baseDocument()) return;
    state.edits.set(state.selectedTool, ruleFromForm());
    refreshPreview();
  }

  let previewTimer = null;

  function refreshPreview() {
    // What is saved is always what was last shown: nothing can be reviewed
    // or saved until the preview of the latest edit is back.
    $("review").disabled = true;
    $("diff-panel").hidden = true;
    clearTimeout(previewTimer);
    previewTimer = setTimeout(renderPreview, VALIDATE_DELAY_MS);
  }

  async function renderPreview() {
    const policy = state.policy;
    if (!policy) return;
    const changed = state.edits.size > 0;
    $("discard").disabled = !changed;
    const doc = workingDocument();
    const seq = ++state.renderSeq;
    let answer;
    try {
      if (doc) {
        answer = await api("POST", "/api/policies/render", { path: policy.path, document: doc });
      } else {
        // A file that does not parse: show it with its messages.
        answer = await api("POST", "/api/policies/validate", { path: policy.path, text: policy.text || "" });
        answer.text = policy.text || "";
      }
    } catch (e) {
      report(e);
      return;
    }
    if (seq !== state.renderSeq) return; // a newer edit is on its way
    state.render = answer;
    showPreview();
  }

  function showPreview() {
    const answer = state.render;
    if (!answer) return;
    const text = state.previewFormat === answer.format || !answer.json ? answer.text : (state.previewFormat === "json" ? answer.json : answer.yaml);
    $("preview").textContent = text;
    $("preview-json").setAttribute("aria-pressed", String(state.previewFormat === "json"));
    $("preview-yaml").setAttribute("aria-pressed", String(state.previewFormat === "yaml"));
    const v = $("validation");
    clear(v);
    if (answer.valid) {
      v.append(el("p", { class: "ok", text: "✓ " + answer.summary }));
    } else {
      v.append(el("p", { class: "error", text: "The policy is not valid; it cannot be saved:" }));
      const list = el("ul", { class: "messages", id: "validation-messages" });
      for (const m of answer.messages) list.append(el("li", {}, el("code", { text: m.text })));
      v.append(list);
    }
    const changed = answer.changed && state.edits.size > 0;
    $("review").disabled = !(answer.valid && changed && baseDocument());
    if (!changed) $("diff-panel").hidden = true;
  }

  function review(focusSave) {
    const answer = state.render;
    if (!answer || !answer.valid) return;
    const diff = $("diff");
    clear(diff);
    $("relayout-note").hidden = !answer.relayout;
    const whole = !answer.content_diff || (answer.relayout && $("diff-whole-file").checked);
    for (const line of whole ? answer.diff : answer.content_diff) {
      const cls = line.op === "+" ? "add" : line.op === "-" ? "del" : "same";
      diff.append(el("span", { class: "line " + cls, text: line.op + " " + line.text + "\n" }));
    }
    $("diff-panel").hidden = false;
    if (focusSave !== false) $("save").focus();
  }

  async function save() {
    const answer = state.render;
    const policy = state.policy;
    if (!answer || !answer.valid || !policy) return;
    $("save").disabled = true;
    const result = $("save-result");
    result.className = "";
    result.textContent = "Saving…";
    try {
      const saved = await api("POST", "/api/policies/save", {
        path: policy.path,
        text: answer.text,
        base_sha256: policy.sha256,
      });
      const reload = saved.reload;
      result.className = reload.status === "failed" ? "error" : "ok";
      result.textContent = "Saved " + saved.path + ". " +
        (reload.status === "reloaded" ? "The gateway reloaded it: the new rules are in force." : reload.message);
      state.edits = new Map();
      $("diff-panel").hidden = true;
      state.policy = null;
      await loadPolicyTab();
      loadCatalogue();
    } catch (e) {
      result.className = "error";
      if (e instanceof HttpError && e.status === 409) {
        result.textContent = "Not saved: the file changed on disk since it was loaded. Reload it from disk and make the change again.";
      } else if (e instanceof HttpError && e.body && e.body.messages) {
        result.textContent = "Not saved: " + e.message + " " + e.body.messages.map((m) => m.text).join("; ");
      } else {
        result.textContent = "Not saved: " + e.message;
      }
    } finally {
      $("save").disabled = false;
    }
  }

  // --- approvals -------------------------------------------------------------------

  // Pending requests every tick (they are few); decided ones, which pile
  // up, only on the Approvals tab and every few ticks.
  let decidedTick = 0;

  async function pollApprovals(withDecided) {
    let answer;
    try {
      answer = await api("GET", "/approvals");
    } catch (e) {
      report(e);
      return;
    }
    const pending = answer.approvals.filter((a) => a.status === "pending" && !a.expired);
    const count = $("pending-count");
    count.textContent = String(pending.length);
    count.hidden = pending.length === 0;
    if (state.tab !== "approvals") return;
    renderPending(pending);
    if (withDecided === true || decidedTick++ % 5 === 0) {
      let all;
      try {
        all = await api("GET", "/approvals?all=true");
      } catch (e) {
        report(e);
        return;
      }
      renderDecided(all.approvals.filter((a) => !(a.status === "pending" && !a.expired)).slice(0, 20));
    }
  }

  function renderPending(pending) {
    const root = $("approvals-pending");
    const shown = Array.from(root.querySelectorAll("tr[data-id]")).map((r) => r.dataset.id).join(",");
    if (shown === pending.map((a) => a.id).join(",") && pending.length > 0) return; // keep what is typed
    clear(root);
    if (pending.length === 0) {
      root.append(el("p", { class: "hint", text: "No call is waiting." }));
      return;
    }
    const rows = pending.map((a) => {
      const reasonId = "reason-" + a.id;
      const reason = el("input", { type: "text", id: reasonId, class: "decision-reason", autocomplete: "off" });
      const decide = async (approve) => {
        const body = reason.value.trim() ? { reason: reason.value.trim(), by: "dashboard" } : { by: "dashboard" };
        try {
          await api("POST", "/approvals/" + encodeURIComponent(a.id) + "/" + (approve ? "approve" : "deny"), body);
        } catch (e) {
          report(e);
        }
        pollApprovals(true);
      };
      return el("tr", { "data-id": a.id, "data-tool": a.tool },
        el("td", {}, el("code", { text: a.tool }), el("div", { class: "hint", text: a.server ? "server " + a.server : "" })),
        el("td", { text: a.grant }),
        el("td", {}, el("code", { class: "args", text: JSON.stringify(a.arguments) })),
        el("td", { text: a.reason || "" }),
        el("td", { text: time(a.created_ms) }),
        el("td", {}, el("label", { for: reasonId, class: "visually-hidden", text: "Reason for " + a.id }), reason),
        el("td", { class: "actions" },
          el("button", { type: "button", class: "approve", text: "Approve", "aria-label": "Approve " + a.tool + " " + a.id, onclick: () => decide(true) }),
          el("button", { type: "button", class: "deny", text: "Deny", "aria-label": "Deny " + a.tool + " " + a.id, onclick: () => decide(false) })));
    });
    root.append(table(["Tool", "Grant", "Arguments", "Why it is held", "Since", "Reason (optional)", ""], rows, "Calls waiting for a decision"));
  }

  function renderDecided(decided) {
    const root = $("approvals-decided");
    clear(root);
    if (decided.length === 0) {
      root.append(el("p", { class: "hint", text: "Nothing decided yet." }));
      return;
    }
    const rows = decided.map((a) => el("tr", { "data-id": a.id },
      el("td", {}, el("code", { text: a.tool })),
      el("td", { text: a.grant }),
      el("td", { text: a.expired && a.status === "pending" ? "expired" : a.status }),
      el("td", { text: a.decision ? a.decision.by + " (" + a.decision.via + ")" : "" }),
      el("td", { text: a.decision && a.decision.reason ? a.decision.reason : "" }),
      el("td", { text: time(a.decision ? a.decision.at_ms : a.created_ms) })));
    root.append(table(["Tool", "Grant", "Status", "By", "Reason", "When"], rows, "Decided requests"));
  }

  // --- traffic -------------------------------------------------------------------------

  function trafficQuery() {
    const params = new URLSearchParams();
    for (const [key, id] of [["grant", "filter-grant"], ["server", "filter-server"], ["tool", "filter-tool"], ["decision", "filter-decision"]]) {
      const v = $(id).value.trim();
      if (v) params.set(key, v);
    }
    return params;
  }

  async function pollTraffic(reset) {
    if (state.tab !== "traffic") return;
    const params = trafficQuery();
    const key = params.toString();
    if (reset || key !== state.traffic.key) state.traffic = { records: [], last: null, key, shown: false, counters: null };
    if (state.traffic.last !== null) params.set("after", String(state.traffic.last));
    params.set("limit", "200");
    let answer;
    let counters;
    try {
      answer = await api("GET", "/api/audit?" + params.toString());
      counters = await api("GET", "/api/counters");
    } catch (e) {
      report(e);
      return;
    }
    if (key !== state.traffic.key) return; // the filter changed meanwhile
    const fresh = answer.records.length > 0 || !state.traffic.shown;
    if (answer.records.length) {
      state.traffic.records = state.traffic.records.concat(answer.records).slice(-500);
      state.traffic.records.sort((a, b) => a.seq - b.seq);
      state.traffic.last = answer.last_seq;
    }
    // Redrawn only when something new came: a row being read keeps its place.
    if (fresh) {
      renderTraffic(answer.note);
      state.traffic.shown = true;
    }
    const countersText = JSON.stringify(counters.counters);
    if (countersText !== state.traffic.counters) {
      renderCounters(counters);
      state.traffic.counters = countersText;
    }
  }

  function renderTraffic(note) {
    const root = $("traffic");
    clear(root);
    const records = state.traffic.records.slice().reverse();
    if (records.length === 0) {
      root.append(el("p", { class: "hint", text: note || "No matching calls yet." }));
      return;
    }
    const rows = records.map((r) => {
      const rec = r.record || {};
      const counters = (rec.counters || []).map((c) => c.counter + " " + c.used + "/" + c.max).join(", ");
      return el("tr", { "data-seq": r.seq, "data-decision": rec.decision || "", "data-tool": rec.tool || "" },
        el("td", { text: String(r.seq) }),
        el("td", { text: time(r.time_ms) }),
        el("td", { text: rec.grant || "" }),
        el("td", { text: rec.server || "" }),
        el("td", {}, el("code", { text: rec.tool || "" })),
        el("td", {}, el("span", { class: "decision decision-" + (rec.decision || ""), text: rec.decision || "" })),
        el("td", { text: rec.reason || "" }),
        el("td", { text: counters }));
    });
    root.append(table(["#", "Time", "Grant", "Server", "Tool", "Decision", "Reason", "Counters"], rows, "Audit trail"));
  }

  function renderCounters(answer) {
    const root = $("counters");
    clear(root);
    const counters = (answer && answer.counters) || [];
    if (counters.length === 0) {
      root.append(el("p", { class: "hint", text: (answer && answer.note) || "No counter has been drawn on yet." }));
      return;
    }
    const rows = counters.map((c) => {
      const meter = el("meter", { min: "0", max: String(c.max), value: String(c.used), "aria-label": c.counter + " used" });
      return el("tr", { "data-counter": c.counter },
        el("td", {}, el("code", { text: c.counter })),
        el("td", { text: c.grant }),
        el("td", {}, meter, " " + c.used + " / " + c.max),
        el("td", { text: c.window_ms ? Math.round(c.window_ms / 1000) + " s" : "" }),
        el("td", { text: time(c.at_ms) + (c.current ? "" : " (window passed)") }));
    });
    root.append(table(["Counter", "Grant", "Used / max", "Window", "As of the call at"], rows, "Counters in use"));
  }

  // --- polling ---------------------------------------------------------------------------

  function startPolling() {
    stopPolling();
    const tick = () => {
      if (!state.token) return;
      pollApprovals();
      if (state.tab === "traffic") pollTraffic(false);
      state.pollTimer = setTimeout(tick, POLL_MS);
    };
    state.pollTimer = setTimeout(tick, POLL_MS);
  }

  function stopPolling() {
    if (state.pollTimer) clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  // --- wiring ---------------------------------------------------------------------------

  function datalist(id, values) {
    const list = el("datalist", { id });
    for (const v of values) list.append(el("option", { value: v }));
    document.body.append(list);
  }

  function start() {
    datalist("windows", ["second", "minute", "hour", "day"]);
    datalist("scopes", ["grant", "session", "global", "arg:"]);
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => signedOut(""));
    for (const t of TABS) $("tab-" + t).addEventListener("click", () => selectTab(t, false));
    $("tabs").addEventListener("keydown", tabKeys);
    $("catalogue-refresh").addEventListener("click", loadCatalogue);
    $("policy-file").addEventListener("change", () => {
      const p = state.policies.find((x) => x.path === $("policy-file").value);
      if (p) choosePolicy(p, false);
    });
    $("policy-reload").addEventListener("click", () => {
      state.policy = null;
      state.edits = new Map();
      loadPolicyTab();
    });
    $("builder-tool").addEventListener("change", () => selectTool($("builder-tool").value));
    const form = $("rule-form");
    form.addEventListener("submit", (e) => e.preventDefault());
    form.addEventListener("input", (e) => {
      if (e.target.id && e.target.id.startsWith("approval-")) approvalTouched = true;
      if (e.target.id !== "builder-tool") formChanged();
    });
    form.addEventListener("change", (e) => {
      if (e.target.id && e.target.id.startsWith("approval-")) approvalTouched = true;
      if (e.target.id !== "builder-tool" && e.target.tagName === "SELECT") formChanged();
    });
    $("add-limit").addEventListener("click", () => { addLimitRow(null); formChanged(); });
    $("add-condition").addEventListener("click", () => { addConditionRow(null); formChanged(); });
    $("rule-recommended").addEventListener("click", () => {
      const entry = toolsOf(state.policy).find((t) => t.name === state.selectedTool);
      if (!entry) return;
      fillForm(entry.recommended, false);
      formChanged();
    });
    $("rule-revert").addEventListener("click", () => {
      state.edits.delete(state.selectedTool);
      selectTool(state.selectedTool);
      refreshPreview();
    });
    $("discard").addEventListener("click", () => {
      state.edits = new Map();
      selectTool(state.selectedTool);
      refreshPreview();
    });
    $("preview-json").addEventListener("click", () => { state.previewFormat = "json"; showPreview(); });
    $("preview-yaml").addEventListener("click", () => { state.previewFormat = "yaml"; showPreview(); });
    $("review").addEventListener("click", review);
    $("diff-whole-file").addEventListener("change", () => review(false));
    $("save").addEventListener("click", save);
    $("save-cancel").addEventListener("click", () => { $("diff-panel").hidden = true; $("review").focus(); });
    $("traffic-filter").addEventListener("submit", (e) => { e.preventDefault(); pollTraffic(true); });
    $("filter-clear").addEventListener("click", () => {
      for (const id of ["filter-grant", "filter-server", "filter-tool"]) $(id).value = "";
      $("filter-decision").value = "";
      pollTraffic(true);
    });

    if (state.token) {
      // Check the kept token before showing anything.
      api("GET", "/api/info").then(showSignedIn, (e) => {
        if (e instanceof Unreachable) signedOut("Cannot reach the gateway at " + location.origin + ": is it running?");
      });
    } else {
      signedOut("");
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
