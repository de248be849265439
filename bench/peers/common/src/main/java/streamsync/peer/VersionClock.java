package streamsync.peer;

/**
 * Elasticsearch external versions for one shard's changes, as Data Prepper derives them: the
 * change's creation second times a million plus the changes seen in that second. DynamoDB
 * sequence numbers (21 to 40 digits) do not fit Elasticsearch's long versions.
 */
public final class VersionClock {
    private long second = -1;
    private long seenThisSecond;

    public long next(long createdMillis) {
        long now = createdMillis / 1000;
        if (now != second) {
            second = now;
            seenThisSecond = 0;
        }
        return second * 1_000_000 + seenThisSecond++;
    }
}
