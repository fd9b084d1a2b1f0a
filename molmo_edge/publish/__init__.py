"""Outputs for events: ZeroMQ (publisher, subscriber, control channel), JSONL files, callbacks.

Modules (nothing is imported here, so `import molmo_edge.publish.schema` stays light):
    schema.py          wire layout: topics, msgpack payloads, the single-frame latest-state layout
    zmq_publisher.py   `EventPublisher`: PUB sockets that never block
    subscriber.py      `EventSubscriber`: receive events in Python (`molmo-edge listen` uses it)
    control.py         `ControlServer`, the `ControlHandler` protocol, request models
    control_client.py  `ControlClient`
    curve.py           CurveZMQ keys and the allow-list authenticator
    endpoints.py       address shorthand, loopback checks, binding
    jsonl.py           `JsonlSink`;  callbacks.py `CallbackSink`;  sink.py `EventSink`, `MultiSink`
"""
