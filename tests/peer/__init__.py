"""A Genode task-loader test peer (DESIGN §5, target side); see peer.py."""
from tests.peer.model import events_xml, frame, parse_taskset, peer_taskjobs, simulate
from tests.peer.peer import FAULTS, Boot, PeerFarm, TaskLoaderPeer, TaskSetRecord

__all__ = ["FAULTS", "Boot", "PeerFarm", "TaskLoaderPeer", "TaskSetRecord", "events_xml", "frame", "parse_taskset",
           "peer_taskjobs", "simulate"]
