"""A ``purchases.baskets`` record as the aggregator reads it: an anonymous basket, or a record to dead-letter.

No single record stops the aggregator: a record that is not a framed ``analytics_basket`` the codec
reads (or whose fields do not make a basket) is a :class:`~receiptflow.dlq.Rejected` with its reason,
position and original bytes, for the worker to dead-letter in the transaction that reads past it.
"""

from __future__ import annotations

from confluent_kafka import Message

from receiptflow.codec import Codec
from receiptflow.dlq import Rejected
from receiptflow.errors import ValidationError
from receiptflow.models import AnalyticsBasket

# What decoding a record that is not a basket raises (anything else is a bug, and stops the worker).
_UNDECODABLE = (ValidationError, KeyError, ValueError, TypeError, AttributeError)


def decode_basket(codec: Codec, msg: Message) -> AnalyticsBasket | Rejected:
    """The basket of ``msg``, or why it is none."""
    try:
        decoded = codec.decode(msg.value(), expect="analytics_basket")
        basket = AnalyticsBasket.from_avro(decoded.value)
        if basket.event_hour.tzinfo is None:
            raise ValidationError("undecodable", "event_hour has no time zone", "event_hour")
        return basket
    except _UNDECODABLE as exc:
        error = exc if isinstance(exc, ValidationError) else ValidationError("undecodable", str(exc))
        where = (str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))
        return Rejected(error, *where, msg.key(), msg.value())
