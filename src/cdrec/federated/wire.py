"""What a Flower message costs on the wire (shared by the round transport and SecAgg+)."""

from __future__ import annotations

from cdrec.federated import loopback_environment

loopback_environment()

from flwr.app import Message


def message_bytes(message: Message) -> int:
    """Bytes of ``message`` as Flower ships it: the deflated size of each object it is made of
    (the message, its RecordDict, each record and each array)."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())
