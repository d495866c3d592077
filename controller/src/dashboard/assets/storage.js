// The Storage page, kept current from the event stream: a disk's state and its attachments
// (attaching, attached, detaching, stuck, gone) change as their volume-* events come, and
// the attach forms offer the user's instances as they start and stop running. A disk the page
// does not show (made elsewhere) brings up the "reload" notice. Only textContent is set: no
// markup from events reaches the page; forms made here carry the page's own CSRF token.
"use strict";

(function () {
  const live = window.stratusLive;
  const rows = document.getElementById("volume-rows");
  const storage = document.getElementById("storage");
  if (!rows || !storage) return;
  const user = storage.dataset.user;
  const stale = document.getElementById("stale");
  const token = (document.querySelector("form#create input[name='csrf']") || {}).value || "";

  const row = (id) => rows.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
  const showStale = () => { if (stale) stale.hidden = false; };

  function hidden(name, value) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    return input;
  }

  // The detach form of an attachment in `state` (a stuck one is forced off).
  function detachForm(volume, instance, state) {
    const form = document.createElement("form");
    form.className = "inline detach";
    form.method = "post";
    form.action = `/storage/volumes/${encodeURIComponent(volume)}/detach`;
    form.append(hidden("csrf", token), hidden("instance", instance));
    const button = document.createElement("button");
    button.type = "submit";
    if (state === "stuck") {
      form.append(hidden("force", "true"));
      button.textContent = "Force detach";
      button.title = "The guest does not release the disk: free it anyway (unmount it first if you can)";
    } else {
      button.textContent = "Detach";
      button.disabled = state === "detaching";
    }
    form.append(button);
    return form;
  }

  function attachment(tr, event, state) {
    const list = tr.querySelector("ul.attachments");
    const instance = String(event.details.instance);
    let item = list.querySelector(`li[data-instance="${CSS.escape(instance)}"]`);
    if (!state) {
      if (item) item.remove();
      return;
    }
    if (!item) {
      item = document.createElement("li");
      item.dataset.instance = instance;
      const device = event.details.target ? `/dev/${event.details.target}` : "?";
      const text = document.createElement("span");
      text.textContent = `VM ${instance} on ${device} `;
      const shown = document.createElement("span");
      shown.className = "attachment-state";
      item.append(text, shown);
      list.append(item);
    }
    item.dataset.state = state;
    item.querySelector(".attachment-state").textContent = state;
    const old = item.querySelector("form.detach");
    const mine = tr.dataset.owner === user || instanceOption(instance) !== null;
    if (old) old.remove();
    if (mine) item.append(detachForm(tr.dataset.id, instance, state));
  }

  const ATTACHMENT = {
    "volume-attaching": "attaching",
    "volume-attached": "attached",
    "volume-detaching": "detaching",
    "volume-stuck": "stuck",
    "volume-detached": null,
  };
  const VOLUME = {
    "volume-created": "creating",
    "volume-available": "available",
    "volume-failed": "failed",
    "volume-deleting": "deleting",
  };

  // The user's running instances, as the attach forms offer them.
  const template = document.getElementById("instance-options");
  function instanceOption(id) {
    return template ? template.content.querySelector(`option[value="${CSS.escape(id)}"]`) : null;
  }
  function refreshSelects() {
    for (const select of document.querySelectorAll("form.attach select[name='instance']")) {
      const chosen = select.value;
      while (select.options.length > 1) select.remove(1);
      for (const option of template.content.querySelectorAll("option")) {
        select.append(option.cloneNode(true));
      }
      select.value = chosen;
      if (select.value !== chosen) select.value = "";
    }
  }

  live.subscribe((event) => {
    if (event.object.kind === "instance" && template && event.owner === user) {
      const id = event.object.id;
      const known = instanceOption(id);
      if (event.details.state === "Running" && !known) {
        const option = document.createElement("option");
        option.value = id;
        option.textContent = `VM ${id} · ${event.details.name || ""}`;
        template.content.append(option);
        refreshSelects();
      } else if (event.details.state && event.details.state !== "Running" && known) {
        known.remove();
        refreshSelects();
      }
      return;
    }
    if (event.object.kind !== "volume") return;
    const tr = row(event.object.id);
    if (event.type in ATTACHMENT) {
      if (tr) attachment(tr, event, ATTACHMENT[event.type]);
      else showStale();
      return;
    }
    if (event.type === "volume-deleted") {
      if (tr) tr.remove();
      return;
    }
    if (event.type in VOLUME) {
      if (!tr) {
        showStale();
        return;
      }
      const state = VOLUME[event.type];
      tr.dataset.state = state;
      const reason = event.details.reason;
      tr.querySelector("td.state").textContent = reason ? `${state} (${reason})` : state;
      // Disks are attached only when available; deleting ones lose their forms.
      if (state !== "available") {
        for (const form of tr.querySelectorAll("td.actions form")) form.remove();
        const details = tr.querySelector("td.actions details");
        if (details) details.remove();
      } else if (!tr.querySelector("form.attach")) {
        showStale();
      }
      return;
    }
    if (event.type === "volume-updated") showStale();
  });
})();
