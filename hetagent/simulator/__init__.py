"""The discrete-event simulator (docs/simulator.md): engine.py the event loop, model.py plan -> stations,
traces.py arrivals, commands.py `hetagent simulate`. Needs no Ray."""
