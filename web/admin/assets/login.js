// The login form: posts the password, and on success goes to the page
// that sent here (a path under /admin/ only).

const form = document.querySelector('#login');
const error = document.querySelector('#login-error');

function nextPage() {
  const next = new URLSearchParams(location.search).get('next') || '';
  return /^\/admin(\/|$)/.test(next) && !next.startsWith('//') && !next.includes('\\') ? next : '/admin/';
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  error.hidden = true;
  const button = form.querySelector('button');
  button.disabled = true;
  try {
    const res = await fetch('/admin/login', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ password: form.password.value }),
    });
    if (res.ok) {
      location.href = nextPage();
      return;
    }
    let msg = `Login failed (HTTP ${res.status}).`;
    if (res.status === 401) msg = 'Wrong password.';
    else if (res.status === 429) msg = 'Too many failed logins from this address: try again in a minute.';
    error.textContent = msg;
    error.dataset.status = String(res.status);
    error.hidden = false;
    form.password.select();
  } catch (err) {
    error.textContent = `Login failed: ${err.message}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});
