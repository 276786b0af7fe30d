// Login and the forced password change (first login with the initial
// password, or a password an admin reset).

import * as api from '../api.js';
import { fmtWait, h, replace } from '../dom.js';
import { button, clearErrors, field, formAlert, readForm, showErrors } from '../ui.js';

function authFrame(title, intro, form, footer) {
  return h('main', { id: 'main', class: 'auth', tabindex: '-1' },
    h('div', { class: 'auth-card' },
      h('div', { class: 'auth-brand' }, h('img', { src: 'favicon.svg', alt: '', width: 32, height: 32 }), 'Portcullis'),
      h('h1', {}, title),
      intro ? h('p', { class: 'muted' }, intro) : null,
      form,
      footer || null));
}

const LOGIN_FIELDS = [
  { name: 'username', label: 'Username', required: true, autocomplete: 'username' },
  { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'current-password' },
];

export function renderLogin(root, { notice, onLoggedIn }) {
  document.title = 'Log in · Portcullis';
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Log in');
  const alert = formAlert();
  const form = h('form', { class: 'form', novalidate: true, 'aria-label': 'Log in' },
    notice ? h('p', { class: 'notice', role: 'status' }, notice) : null,
    alert,
    LOGIN_FIELDS.map(field),
    submit);
  let countdown = null;

  const lockFor = (seconds) => {
    clearInterval(countdown);
    let left = seconds;
    const show = () => {
      alert.hidden = false;
      alert.textContent = `Too many failed logins from here or for this user. Try again in ${fmtWait(left)}.`;
      submit.disabled = left > 0;
    };
    show();
    countdown = setInterval(() => {
      left -= 1;
      show();
      if (left <= 0) { clearInterval(countdown); alert.textContent = 'You can try again now.'; }
    }, 1000);
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const values = readForm(form, LOGIN_FIELDS);
    const missing = LOGIN_FIELDS.filter((f) => !values[f.name]).map((f) => ({ key: f.name, problem: `Enter your ${f.label.toLowerCase()}.` }));
    if (missing.length) {
      showErrors(form, new api.ApiError({ status: 400, code: 'bad_request', errors: missing }));
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Logging in…';
    try {
      const answer = await api.post('auth/login', values, { quiet: true });
      clearInterval(countdown);
      onLoggedIn(answer);
    } catch (err) {
      submit.disabled = false;
      submit.textContent = 'Log in';
      if (err.status === 401) {
        showErrors(form, new api.ApiError({ status: 401, message: 'Wrong username or password, or the user may not use the console.' }));
        form.elements.password.value = '';
      } else if (err.status === 429) {
        lockFor(err.retryAfter ?? 60);
        alert.focus();
      } else if (err.status === 503) {
        showErrors(form, new api.ApiError({ status: 503, message: 'The gateway is busy checking other logins. Try again in a moment.' }));
      } else {
        showErrors(form, err);
      }
    }
  });

  replace(root, authFrame('Log in to the console', null, form,
    h('p', { class: 'muted small' }, 'First start? The user is “admin” and its password is in the file initial-admin-password in the gateway’s storage directory.')));
  form.elements.username.focus();
}

const CHANGE_FIELDS = [
  { name: 'current_password', label: 'Current password', type: 'password', required: true, autocomplete: 'current-password' },
  { name: 'new_password', label: 'New password', type: 'password', required: true, autocomplete: 'new-password', hint: 'At least 12 characters (or what the gateway’s login.min_password_length says).' },
  { name: 'confirm_password', label: 'New password again', type: 'password', required: true, autocomplete: 'new-password' },
];

export function renderPasswordChange(root, { user, onChanged, onLogout }) {
  document.title = 'Change your password · Portcullis';
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Change password');
  const form = h('form', { class: 'form', novalidate: true, 'aria-label': 'Change your password' },
    formAlert(),
    h('input', { type: 'text', name: 'username', autocomplete: 'username', value: user || '', hidden: true, readonly: true }),
    CHANGE_FIELDS.map(field),
    submit);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const values = readForm(form, CHANGE_FIELDS);
    const problems = [];
    for (const f of CHANGE_FIELDS) if (!values[f.name]) problems.push({ key: f.name, problem: 'Required.' });
    if (values.new_password && values.confirm_password && values.new_password !== values.confirm_password) {
      problems.push({ key: 'confirm_password', problem: 'The two new passwords differ.' });
    }
    if (values.new_password && values.new_password === values.current_password) {
      problems.push({ key: 'new_password', problem: 'Choose a password different from the current one.' });
    }
    if (problems.length) {
      showErrors(form, new api.ApiError({ status: 400, code: 'bad_request', errors: problems }));
      return;
    }
    submit.disabled = true;
    try {
      const answer = await api.post('auth/password', {
        current_password: values.current_password,
        new_password: values.new_password,
      }, { quiet: true });
      onChanged(answer);
    } catch (err) {
      submit.disabled = false;
      if (err.status === 401 && err.code !== 'unauthorized') {
        showErrors(form, new api.ApiError({ status: 400, errors: [{ key: 'current_password', problem: 'This is not your current password.' }] }));
      } else if (err.status === 401) {
        onLogout();
      } else {
        showErrors(form, err);
      }
    }
  });

  replace(root, authFrame('Choose a new password',
    `${user ? `${user}, before` : 'Before'} you use the console, replace the password you were given with one only you know.`,
    form,
    h('p', { class: 'auth-foot' }, button('Log out', onLogout, { kind: 'ghost', small: true }))));
  form.elements.current_password.focus();
}
