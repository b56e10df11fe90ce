// A form with data-confirm asks before it posts (revoking a key, deleting a connection): the
// browser's own dialog. A file of its own, not an inline handler: the Content Security Policy
// runs only costlab's script files. For plain forms only: htmx sends an hx-post form whatever
// this listener decides (an htmx form asks with hx-confirm).
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form && form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    ev.preventDefault();
  }
}, true);
