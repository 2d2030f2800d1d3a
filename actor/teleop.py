"""Teleop devices behind the teleop hook: a human takes over from the policy.

A teleop is a callable `f(observation) -> action or None`, polled once per control step
before the policy acts: an action (policy units, [-1, 1] per component) replaces the policy's
and the step is an intervention; None leaves the step to the policy. `wsrl record --teleop` and
`wsrl actor --robot --teleop` take one by name (`make_teleop`):

- `keyboard`: the terminal the command runs in (`KeyboardTeleop`).
- `spacemouse`: a 3Dconnexion SpaceMouse (6-DoF) through the `pyspacemouse` HID library, an
  optional extra: `pip install 'wsrl[spacemouse]'` plus the system hidapi library
  (`apt install libhidapi-hidraw0`) (`SpaceMouseTeleop`).
- `package.module:function`: any callable of the signature above.

Both devices are tested with fake devices (a pipe for the terminal, a fake HID device under
pyspacemouse's real report parsing): tests/test_robot_ops.py.
"""

from __future__ import annotations

import atexit
import os
import select
import sys
from typing import Any, Callable, Optional

import numpy as np

DEVICES = ("keyboard", "spacemouse")


def make_teleop(name: str, action_dim: int) -> Callable:
    """The teleop called `name`: 'keyboard', 'spacemouse' or a 'package.module:function' entry
    point. Raises ValueError naming --teleop for anything else or an unusable device."""
    if name == "keyboard":
        return KeyboardTeleop(action_dim)
    if name == "spacemouse":
        return SpaceMouseTeleop(action_dim)
    if ":" in name:
        from actor.envs import load_callable

        return load_callable(name)
    raise ValueError(f"--teleop: got {name!r}, expected one of {', '.join(DEVICES)} or a 'package.module:function' entry point")


def close_teleop(teleop: Optional[Callable]) -> None:
    """Releases a teleop device (the terminal's mode, the HID handle), if it holds one."""
    close = getattr(teleop, "close", None)
    if callable(close):
        close()


class KeyboardTeleop:
    """Keyboard teleop in a terminal.

    Keys (read without Enter; Ctrl-C and Ctrl-\\ keep their meaning):

    - space: take over / hand back to the policy. Taking over starts from a zero command.
    - per action component i, a pair (minus, plus): a/d (or left/right arrow), s/w (or
      down/up arrow), f/r, j/l, k/i, u/o, n/m; each press moves component i by `step`,
      clipped to [-1, 1]. A terminal reports presses, not releases, so the command holds
      until changed (a delta controller stops with x).
    - x: zero the command (stay in control).

    While taken over every call returns the command; otherwise None. `fd` is the input (the
    terminal by default; tests give a pipe); a terminal is put in cbreak mode until `close()`.
    """

    PAIRS = ("ad", "sw", "fr", "jl", "ki", "uo", "nm")
    ARROWS = {"D": (0, -1), "C": (0, 1), "B": (1, -1), "A": (1, 1)}  # ESC [ D/C/B/A: left/right/down/up

    def __init__(self, action_dim: int, step: float = 0.25, fd: Optional[int] = None, require_tty: bool = True):
        if not 1 <= action_dim <= len(self.PAIRS):
            raise ValueError(f"--teleop keyboard: the action has {action_dim} components, expected 1..{len(self.PAIRS)} (one key pair each)")
        if not 0 < step <= 1:
            raise ValueError(f"keyboard teleop field 'step': got {step}, expected a number in (0, 1]")
        self.action_dim, self.step = action_dim, float(step)
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.keys = {}
        for i, (minus, plus) in enumerate(self.PAIRS[:action_dim]):
            self.keys[minus], self.keys[plus] = (i, -1), (i, 1)
        self.active = False
        self.command = np.zeros(action_dim, np.float32)
        self._pending = ""  # an escape sequence cut between two reads
        self._saved_mode = None
        if os.isatty(self.fd):
            import termios
            import tty

            self._saved_mode = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)  # keys without Enter, no echo; signals keys still work
            atexit.register(self.close)
            print("[wsrl teleop] keyboard: space takes over / hands back; " + ", ".join(
                f"{m}/{p}: component {i} -/+" for i, (m, p) in enumerate(self.PAIRS[:action_dim])) + "; x: zero", flush=True)
        elif require_tty:
            raise ValueError("--teleop keyboard: standard input is not a terminal (run the command in a terminal, not under nohup or a pipe)")

    def _read(self) -> str:
        chunks = []
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 1024)
            if not data:  # end of input: nothing more will come
                break
            chunks.append(data.decode("utf-8", "replace"))
        return self._pending + "".join(chunks)

    def handle(self, text: str) -> None:
        """Applies key presses (as read from the terminal) to the takeover state and command."""
        self._pending = ""
        i = 0
        while i < len(text):
            key = text[i]
            if key == "\x1b":  # an arrow key: ESC [ A..D (or ESC O A..D)
                if i + 2 >= len(text):
                    self._pending = text[i:]  # the rest arrives with the next read
                    return
                arrow = self.ARROWS.get(text[i + 2]) if text[i + 1] in "[O" else None
                if arrow is not None and arrow[0] < self.action_dim:
                    self._press(*arrow)
                i += 3
                continue
            if key == " ":
                self.active = not self.active
                self.command[:] = 0.0
            elif key == "x":
                self.command[:] = 0.0
            elif key in self.keys:
                self._press(*self.keys[key])
            i += 1

    def _press(self, component: int, sign: int) -> None:
        if self.active:
            self.command[component] = np.clip(self.command[component] + sign * self.step, -1.0, 1.0)

    def __call__(self, observation: Any = None) -> Optional[np.ndarray]:
        self.handle(self._read())
        return self.command.copy() if self.active else None

    def close(self) -> None:
        """Gives the terminal its mode back."""
        if self._saved_mode is not None:
            import termios

            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_mode)
            except termios.error:
                pass
            self._saved_mode = None


class SpaceMouseTeleop:
    """A 3Dconnexion SpaceMouse (6-DoF) through `pyspacemouse` (imported only here).

    Axes in pyspacemouse's right-handed Z-up frame (`AxisConvention.HID_Z_UP`), each in
    [-1, 1]: x, y, z, roll, pitch, yaw. Action component i is axis i times `scale`
    (`action_dim` <= 6), clipped to [-1, 1]; a 7th component is a gripper: +1 while the first
    button is held, -1 while the second is, else 0. Axes within `deadzone` of 0 count as 0.
    The human has taken over while any axis is outside the deadzone or a button is held; the
    call returns None otherwise (the policy acts).

    `device`: an opened pyspacemouse device (tests give one over a fake HID device); default:
    the first SpaceMouse found, opened here.
    """

    AXES = ("x", "y", "z", "roll", "pitch", "yaw")

    def __init__(self, action_dim: int, device: Any = None, scale: float = 1.0, deadzone: float = 0.05):
        if not 1 <= action_dim <= 7:
            raise ValueError(f"--teleop spacemouse: the action has {action_dim} components, expected 1..7 (6 axes and a gripper)")
        if not 0 <= deadzone < 1:
            raise ValueError(f"spacemouse teleop field 'deadzone': got {deadzone}, expected a number in [0, 1)")
        self.action_dim, self.scale, self.deadzone = action_dim, float(scale), float(deadzone)
        self.device = device if device is not None else open_spacemouse()

    def _state(self):
        """The device's latest state: reads every report waiting (one per read; a SpaceMouse
        sends translation and rotation in separate reports), at most 64 per call."""
        state = self.device.read()
        for _ in range(64):
            before = state.t
            state = self.device.read()
            if state.t == before:  # nothing new
                break
        return state

    def __call__(self, observation: Any = None) -> Optional[np.ndarray]:
        state = self._state()
        motion = np.array([getattr(state, axis) for axis in self.AXES], np.float64)
        motion[np.abs(motion) < self.deadzone] = 0.0
        pressed = [bool(b) for b in state.buttons] + [False, False]
        if not motion.any() and not any(pressed):
            return None
        action = np.zeros(self.action_dim, np.float32)
        arm = min(self.action_dim, 6)
        action[:arm] = np.clip(self.scale * motion[:arm], -1.0, 1.0)
        if self.action_dim == 7:
            action[6] = 1.0 if pressed[0] else (-1.0 if pressed[1] else 0.0)
        return action

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None


def open_spacemouse():
    """The first SpaceMouse found, opened non-blocking (pyspacemouse; the optional extra)."""
    try:
        import pyspacemouse
    except ImportError as e:
        raise ValueError("--teleop spacemouse: needs the 'spacemouse' extra: pip install 'wsrl[spacemouse]' "
                         f"(and the system hidapi library, e.g. apt install libhidapi-hidraw0) ({e})") from None
    try:
        return pyspacemouse.open(axis_convention=pyspacemouse.AxisConvention.HID_Z_UP)
    except Exception as e:  # no device, no permission on /dev/hidraw*, no hidapi library
        raise ValueError(f"--teleop spacemouse: cannot open a SpaceMouse: {e} (is it plugged in, and may this user read "
                         "/dev/hidraw*? a udev rule for vendor 256f/046d does it; the hidapi library: apt install libhidapi-hidraw0)") from None

