package io.receiptflow.kstreams;

/**
 * An input record that breaks the contract: the reason code, message and field the dead letter carries.
 *
 * <p>The reason codes are the router's (receiptflow.validation and receiptflow.codec), so the two
 * processors' dead-letter topics can be compared record by record.
 */
final class Rejected extends Exception {
    private static final long serialVersionUID = 1L;

    final String reason;
    final String field;

    Rejected(String reason, String message, String field) {
        // No stack trace: rejections are ordinary data, and filling one per bad record costs.
        super(message, null, false, false);
        this.reason = reason;
        this.field = field;
    }

    Rejected(String reason, String message) {
        this(reason, message, null);
    }
}
