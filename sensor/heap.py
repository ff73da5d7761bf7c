"""When the garbage collector runs (decision 0203): not while the command's modules load, and then rarely.

Python collects its youngest generation every 700 new container objects and, every tenth of those, the one above;
each collection walks every object in the generations it collects. Start-up makes tens of thousands of objects
(modules, classes, functions, the parser) that live as long as the process, and a replay's hits make tuples and
records that mostly die young: at the default schedule the collector ran 70-94 times in a 1,000,000-frame
replay and took 13-36 ms; now 4 times, 3 ms (decision 0203 has the measurements). So: no collection until the command
line is read, then everything alive is frozen (moved where no collection walks it again; what start-up made is never
garbage), and the youngest generation is collected every 10,000 objects. Cycles are still collected, later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # new container objects between collections of the youngest generation (Python: 700)
_quiet = False  # the collector was turned off here, and is to be turned on again by settle()


def quiet_start() -> None:
    """Called first thing: no collection while the modules load (they are alive for good)."""
    global _quiet
    if gc.isenabled():
        gc.disable()
        _quiet = True


def settle() -> None:
    """Called once the command line is read (and again, a no-op, when the command ends): freeze what start-up made,
    collect rarely from now on. A collector that was off before quiet_start() is left off."""
    global _quiet
    if not _quiet:
        return
    _quiet = False
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    gc.enable()
