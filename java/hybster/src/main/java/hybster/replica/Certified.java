package hybster.replica;

import hybster.trinx.Certificate;
import hybster.wire.Message;
import hybster.wire.Message.Checkpoint;
import hybster.wire.Message.Commit;
import hybster.wire.Message.NewView;
import hybster.wire.Message.Prepare;
import hybster.wire.Message.Recover;
import hybster.wire.Message.RecoveryAnswer;
import hybster.wire.Message.ViewChange;

/** The certified messages (those that take a trusted counter value): their certificate, and what it covers. */
final class Certified {
    private Certified() {}

    /** The certificate of a certified message; null for any other. */
    static Certificate certificateOf(Message message) {
        if (message instanceof Prepare p) {
            return p.certificate();
        } else if (message instanceof Commit c) {
            return c.certificate();
        } else if (message instanceof ViewChange v) {
            return v.certificate();
        } else if (message instanceof NewView v) {
            return v.certificate();
        } else if (message instanceof Checkpoint c) {
            return c.certificate();
        } else if (message instanceof Recover r) {
            return r.certificate();
        } else if (message instanceof RecoveryAnswer a) {
            return a.certificate();
        }
        return null;
    }

    /** What a certified message's certificate covers. */
    static byte[] certified(Message message) {
        if (message instanceof Prepare p) {
            return Prepare.certified(p.view(), p.order(), p.batchDigest());
        } else if (message instanceof Commit c) {
            return Commit.certified(c.view(), c.order(), c.batchDigest());
        } else if (message instanceof ViewChange v) {
            return ViewChange.certified(v.newView(), v.stable(), v.log());
        } else if (message instanceof Checkpoint c) {
            return Checkpoint.certified(c.order(), c.stateDigest());
        } else if (message instanceof Recover) {
            return Recover.certified();
        } else if (message instanceof RecoveryAnswer a) {
            return RecoveryAnswer.certified(a.recovering(), a.recoverValue(), a.highestOrder(), a.view());
        } else {
            NewView v = (NewView) message;
            return NewView.certified(v.view(), v.proofs());
        }
    }
}
