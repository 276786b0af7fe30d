// Shared building blocks: states, tables, buttons, dialogs, forms with
// per-field errors, toasts. Pages compose these; none of them knows a page.

import { h, replace, uid } from './dom.js';
import { ApiError, describe, fieldName } from './api.js';

// ---- states ---------------------------------------------------------------

export function loading(text = 'Loading…') {
  return h('p', { class: 'state state-loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text);
}

export function empty(text, action) {
  return h('div', { class: 'state state-empty' }, h('p', {}, text), action || null);
}

export function errorState(err, retry) {
  return h('div', { class: 'state state-error', role: 'alert' },
    h('p', {}, h('strong', {}, 'Could not load this. '), describe(err)),
    err instanceof ApiError && err.correlationId ? h('p', { class: 'muted small' }, `Correlation id ${err.correlationId}`) : null,
    retry ? button('Try again', retry) : null);
}

// ---- small pieces -----------------------------------------------------------

/** tone: ok | warn | bad | info | muted */
export function badge(text, tone = 'muted', title) {
  return h('span', { class: `badge badge-${tone}`, title }, text);
}

/** kind: primary | danger | ghost | (default) */
export function button(label, onclick, { kind = '', small = false, ...attrs } = {}) {
  return h('button', { type: 'button', class: ['btn', kind && `btn-${kind}`, small && 'btn-small'], onclick, ...attrs }, label);
}

export function pageHeader(title, ...actions) {
  return h('header', { class: 'page-header' },
    h('h1', { tabindex: '-1', class: 'page-title' }, title),
    h('div', { class: 'page-actions' }, actions));
}

export function section(title, ...content) {
  const id = uid('section');
  return h('section', { class: 'panel', 'aria-labelledby': id }, h('h2', { id }, title), content);
}

/** <dl> of [label, value] pairs; values may be nodes. */
export function kvList(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
}

export function code(text) {
  return h('code', {}, text);
}

/** Text in a read-only box with a copy button. */
export function copyBox(text, label) {
  const id = uid('copy');
  const box = h('textarea', { id, class: 'copy-text', readonly: true, rows: Math.min(4, String(text).split('\n').length + (String(text).length > 70 ? 1 : 0)), spellcheck: 'false' });
  box.value = text;
  return h('div', { class: 'copy-box' },
    h('label', { for: id }, label),
    h('div', { class: 'copy-row' }, box, copyButton(text, box)));
}

export function copyButton(text, fallbackField) {
  const btn = button('Copy', async () => {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch {
      if (fallbackField) {
        fallbackField.select();
        ok = document.execCommand('copy');
      }
    }
    btn.textContent = ok ? 'Copied' : 'Select and copy';
    setTimeout(() => { btn.textContent = 'Copy'; }, 2000);
  }, { small: true });
  return btn;
}

// ---- tables -----------------------------------------------------------------

/**
 * columns: [{label, cell: row => node|string, class?}]. On a narrow screen
 * each row becomes a card headed by its first cell, the other cells labelled
 * from data-label (see app.css).
 */
export function table({ columns, rows, label, rowClass, cards = true }) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': label },
    // Name/value tables stay tables on phones: as cards, each pair would
    // become a box holding one labelled value.
    h('table', { class: ['table', cards ? 'table-cards' : 'table-pairs'] },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h('tbody', {}, rows.map((row) => h('tr', { class: rowClass ? rowClass(row) : null },
        // The cell's content in one box, so the card layout sees a label and a value.
        columns.map((c, i) => h(i === 0 ? 'th' : 'td', { class: c.class, scope: i === 0 ? 'row' : null, dataset: { label: c.label } },
          i === 0 ? c.cell(row) : h('div', { class: 'cell' }, c.cell(row)))))))));
}

// ---- toasts -----------------------------------------------------------------

export function toast(message, tone = 'ok') {
  const host = document.getElementById('toasts');
  const el = h('div', { class: `toast toast-${tone}` }, message);
  host.append(el);
  setTimeout(() => el.remove(), tone === 'bad' ? 8000 : 4000);
}

// ---- dialogs ----------------------------------------------------------------

/**
 * A modal <dialog>: the browser traps focus inside and closes it on Escape;
 * focus returns to whatever opened it. Returns {dialog, body, close}.
 */
export function openDialog({ title, content, actions = [], wide = false, onClose } = {}) {
  const opener = document.activeElement;
  const titleId = uid('dialog-title');
  const body = h('div', { class: 'dialog-body' }, content);
  const closeBtn = h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': 'Close' }, '×');
  const dialog = h('dialog', { class: ['dialog', wide && 'dialog-wide'], 'aria-labelledby': titleId },
    h('div', { class: 'dialog-head' }, h('h2', { id: titleId }, title), closeBtn),
    body,
    actions.length ? h('div', { class: 'dialog-actions' }, actions) : null);
  const close = (value) => { if (dialog.open) dialog.close(value ?? ''); };
  closeBtn.addEventListener('click', () => close());
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
    if (onClose) onClose(dialog.returnValue);
  });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, body, close };
}

/** Ask before doing something that cannot be undone. Resolves to true/false. */
export function confirm({ title, message, confirmLabel = 'Confirm', danger = true }) {
  return new Promise((resolve) => {
    let answered = false;
    const cancel = button('Cancel', () => d.close());
    const ok = button(confirmLabel, () => { answered = true; d.close(); }, { kind: danger ? 'danger' : 'primary' });
    const d = openDialog({ title, content: h('p', {}, message), actions: [cancel, ok], onClose: () => resolve(answered) });
    cancel.focus();
  });
}

// ---- forms ------------------------------------------------------------------

/**
 * One labelled field with its hint and error slot. spec:
 * {name, label, type: text|password|number|checkbox|select|checks|textarea,
 *  value, hint, required, options: [value | {value, label}], placeholder,
 *  autocomplete, readonly}
 */
export function field(spec) {
  const id = uid(`f-${spec.name}`);
  const hintId = spec.hint ? `${id}-hint` : null;
  const errId = `${id}-err`;
  const describedBy = [hintId, errId].filter(Boolean).join(' ');
  const type = spec.type || 'text';
  let control;
  if (type === 'select') {
    control = h('select', { id, name: spec.name, 'aria-describedby': describedBy, required: spec.required },
      spec.options.map((o) => {
        const opt = typeof o === 'object' ? o : { value: o, label: o };
        return h('option', { value: opt.value, selected: String(spec.value ?? '') === String(opt.value) }, opt.label);
      }));
  } else if (type === 'checks') {
    const selected = new Set(spec.value || []);
    control = h('fieldset', { class: 'checks', id, 'aria-describedby': describedBy },
      h('legend', {}, spec.label),
      spec.options.map((o) => h('label', { class: 'check' },
        h('input', { type: 'checkbox', name: spec.name, value: o, checked: selected.has(o) }), o)));
  } else if (type === 'checkbox') {
    control = h('input', { id, type: 'checkbox', name: spec.name, checked: Boolean(spec.value), 'aria-describedby': describedBy });
  } else if (type === 'textarea') {
    control = h('textarea', { id, name: spec.name, rows: 3, 'aria-describedby': describedBy, placeholder: spec.placeholder, readonly: spec.readonly });
    control.value = spec.value ?? '';
  } else {
    control = h('input', {
      id, type, name: spec.name, value: spec.value ?? '', required: spec.required, readonly: spec.readonly,
      placeholder: spec.placeholder, autocomplete: spec.autocomplete || 'off', 'aria-describedby': describedBy,
      spellcheck: type === 'text' ? 'false' : null, inputmode: spec.inputmode, minlength: spec.minlength,
    });
  }
  const hint = spec.hint ? h('p', { class: 'hint', id: hintId }, spec.hint) : null;
  const error = h('p', { class: 'field-error', id: errId, hidden: true });
  if (type === 'checkbox') {
    return h('div', { class: 'field field-checkbox', dataset: { field: spec.name } },
      h('label', { for: id, class: 'check' }, control, spec.label), hint, error);
  }
  if (type === 'checks') {
    return h('div', { class: 'field', dataset: { field: spec.name } }, control, hint, error);
  }
  return h('div', { class: 'field', dataset: { field: spec.name } },
    h('label', { for: id, class: spec.required ? 'required' : null }, spec.label),
    control, hint, error);
}

/** The values of a form built from field() specs. */
export function readForm(form, specs) {
  const values = {};
  for (const spec of specs) {
    const type = spec.type || 'text';
    if (type === 'checks') {
      values[spec.name] = [...form.querySelectorAll(`input[name="${spec.name}"]:checked`)].map((i) => i.value);
    } else if (type === 'checkbox') {
      values[spec.name] = form.elements[spec.name].checked;
    } else {
      values[spec.name] = form.elements[spec.name].value;
    }
  }
  return values;
}

/** Clear every inline error of a form. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll('.field-error')) { el.hidden = true; el.textContent = ''; }
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const alert = form.querySelector('.form-alert');
  if (alert) { alert.hidden = true; alert.replaceChildren(); }
}

/**
 * Show an error next to the fields it concerns: the API's
 * `errors: [{key, problem}]` go under the matching field, anything else (or
 * a plain error) in the form's alert. Focuses the first field in error.
 */
export function showErrors(form, err) {
  clearErrors(form);
  const loose = [];
  let first = null;
  const problems = err instanceof ApiError && err.errors.length ? err.errors : [];
  for (const p of problems) {
    const wrap = form.querySelector(`[data-field="${CSS.escape(fieldName(p.key))}"]`);
    if (!wrap) { loose.push(`${p.key}: ${p.problem}`); continue; }
    const slot = wrap.querySelector('.field-error');
    slot.hidden = false;
    slot.textContent = slot.textContent ? `${slot.textContent} ${p.problem}` : p.problem;
    const control = wrap.querySelector('input, select, textarea, fieldset');
    control.setAttribute('aria-invalid', 'true');
    first = first || control;
  }
  const alert = form.querySelector('.form-alert');
  if (!problems.length) loose.push(describe(err));
  if (loose.length && alert) {
    alert.hidden = false;
    replace(alert, loose.length === 1 ? loose[0] : h('ul', {}, loose.map((t) => h('li', {}, t))));
  }
  const target = first?.matches('fieldset') ? first.querySelector('input') : first;
  (target || alert)?.focus();
}

export function formAlert() {
  return h('div', { class: 'form-alert', role: 'alert', tabindex: '-1', hidden: true });
}

/**
 * A dialog holding a form. `submit(values)` runs on submit; when it throws,
 * its errors are shown inline and the dialog stays open; when it resolves,
 * the dialog closes and formDialog resolves to its result (null if cancelled).
 */
export function formDialog({ title, fields, submitLabel = 'Save', intro, wide = false, submit }) {
  return new Promise((resolve) => {
    let result = null;
    const save = h('button', { type: 'submit', class: 'btn btn-primary' }, submitLabel);
    const cancel = button('Cancel', () => d.close());
    const form = h('form', { class: 'form', novalidate: true },
      intro ? h('p', { class: 'muted' }, intro) : null,
      formAlert(),
      h('div', { class: 'form-grid' }, fields.map(field)),
      h('div', { class: 'dialog-actions' }, cancel, save));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearErrors(form);
      save.disabled = true;
      save.setAttribute('aria-busy', 'true');
      try {
        result = await submit(readForm(form, fields));
        d.close();
      } catch (err) {
        showErrors(form, err);
      } finally {
        save.disabled = false;
        save.removeAttribute('aria-busy');
      }
    });
    const d = openDialog({ title, content: form, wide, onClose: () => resolve(result) });
    form.querySelector('input:not([readonly]), select, textarea')?.focus();
  });
}

// ---- polling ----------------------------------------------------------------

/** Run `fn` now and then `ms` after each run finishes, until stopped. */
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try { await fn(); } catch { /* the page shows its own error state */ }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
