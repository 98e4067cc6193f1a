"""The engines that generate text, started and stopped with the server.

    builtin.py    modelpod's own engine (server/scheduling/generation.py) on the model's thread
    external.py   an external engine as a supervised child process on a private loopback port
    group_guard.py  the leader of the engine's process group, which stops all of it (run as a script)
    commands.py   the command lines of llama.cpp's llama-server and vLLM, and where their programs are
    process.py    the child process: started, watched, its log passed on, stopped
    remote.py     the routes' TextEngine over the child's OpenAI API, with modelpod's limits and metrics

Whatever the engine, the routes see a `TextEngine` (server/scheduling/text_engine.py). The modules of the
external engines import httpx, which a server of another model need not have: `server/app.py` imports
them only when the spec names an external engine.
"""
