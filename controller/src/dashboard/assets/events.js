// The events page: every new event on top, shown when it passes the form's filters (type:
// a prefix or a whole type; object: "kind/id" or a kind). The events the page came with are
// filtered the same way.
"use strict";

(function () {
  const live = window.stratusLive;
  const list = document.getElementById("event-list");
  const form = document.getElementById("event-filter");
  if (!list || !form) return;
  const MAX = 2000;
  const kind = form.elements.type.value.trim();
  const object = form.elements.object.value.trim();

  function passes(type, key) {
    if (kind && !type.startsWith(kind)) return false;
    if (object && key !== object && !key.startsWith(`${object}/`)) return false;
    return true;
  }

  for (const li of Array.from(list.children)) {
    const key = li.querySelector(".object").textContent;
    if (!passes(li.dataset.type, key)) li.remove();
  }
  live.subscribe((event) => {
    if (!passes(event.type, `${event.object.kind}/${event.object.id}`)) return;
    list.prepend(live.activityItem(event));
    while (list.children.length > MAX) list.lastElementChild.remove();
  });
})();
