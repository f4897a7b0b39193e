const health = document.getElementById("health");
const list = document.getElementById("capsules");
const listStatus = document.getElementById("capsules-status");

async function showHealth() {
  try {
    const response = await fetch("/healthz");
    health.textContent = response.ok ? "The API is up." : `The API answered ${response.status}.`;
    health.className = response.ok ? "ok" : "bad";
  } catch (error) {
    health.textContent = `The API is unreachable: ${error.message}`;
    health.className = "bad";
  }
}

async function showCapsules() {
  try {
    const response = await fetch("/v1/capsules");
    if (!response.ok) {
      listStatus.textContent = `Listing capsules answered ${response.status}.`;
      return;
    }
    const body = await response.json();
    const capsules = Array.isArray(body.items) ? body.items : [];
    for (const capsule of capsules) {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "mono";
      name.textContent = capsule.name;
      item.append(name, ` ${capsule.latestVersion} ${capsule.description}`);
      list.append(item);
    }
    listStatus.textContent = capsules.length === 0 ? "No capsules are published yet." : "";
  } catch (error) {
    listStatus.textContent = `Could not list capsules: ${error.message}`;
  }
}

showHealth();
showCapsules();
