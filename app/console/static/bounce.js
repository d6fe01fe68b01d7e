// Reached from another site's link: load this address again from our own page, so that
// the browser sends the SameSite=Strict session cookie with it.
"use strict";
window.location.replace(window.location.href);
