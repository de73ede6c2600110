import "./styles.css";
import { startClient } from "./client.js";
import { clearSession, loadSession, type Session, saveSession } from "./session.js";
import { renderSignIn } from "./ui/sign-in.js";

const root = document.getElementById("app")!;
let stop: (() => void) | undefined;

function signedIn(session: Session): void {
  saveSession(session);
  stop = startClient(root, session, signOut);
}

function signOut(notice?: string): void {
  stop?.();
  stop = undefined;
  clearSession();
  renderSignIn(root, signedIn, notice);
}

const session = loadSession();
if (session) signedIn(session);
else renderSignIn(root, signedIn);
