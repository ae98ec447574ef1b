"""The seed's producer classes, copied verbatim from
kafka-producer-consumer-patterns.md (the same text as the copy in
crates/schema/tests/fixtures/seed/generate.py; a test of dora-bench keeps the
two equal). Only the imports they need are added above them.
"""

import uuid
from datetime import datetime
from typing import Any, Dict, Optional

from kafka import KafkaProducer


# --- copied from the seed -----------------------------------------------------

class AgentEventProducer:
    def __init__(self, producer: KafkaProducer, agent_id: str, agent_type: str):
        self.producer = producer
        self.agent_id = agent_id
        self.agent_type = agent_type

    def send_event(self, event_type: str, status: str,
                   message: Optional[str] = None,
                   metadata: Optional[Dict[str, Any]] = None,
                   task_id: Optional[str] = None) -> None:
        """Send an agent event to Kafka."""

        event = {
            "eventId": str(uuid.uuid4()),
            "agentId": self.agent_id,
            "timestamp": int(datetime.utcnow().timestamp() * 1000),
            "eventType": event_type,
            "agentType": self.agent_type,
            "status": status,
            "version": "1.0.0",
            "message": message,
            "metadata": metadata or {},
            "taskId": task_id
        }

        # Use agent_id as partition key for ordering
        self.producer.send(
            topic='agent-events',
            key=self.agent_id,
            value=event
        )

    def send_heartbeat(self, resource_usage: Optional[Dict] = None) -> None:
        """Send heartbeat with optional resource usage."""
        self.send_event(
            event_type="HEARTBEAT",
            status="HEALTHY",
            metadata={"resource_usage": resource_usage} if resource_usage else None
        )

    def send_task_completion(self, task_id: str, result: Dict[str, Any]) -> None:
        """Send task completion event."""
        self.send_event(
            event_type="TASK_COMPLETED",
            status="HEALTHY",
            task_id=task_id,
            metadata={"result_summary": result}
        )


class ComplianceReportProducer:
    def __init__(self, producer: KafkaProducer):
        self.producer = producer

    def send_gap_assessment(self, organization_id: str,
                           assessment_data: Dict[str, Any]) -> None:
        """Send gap assessment results."""

        report = {
            "reportId": str(uuid.uuid4()),
            "organizationId": organization_id,
            "timestamp": int(datetime.utcnow().timestamp() * 1000),
            "reportType": "GAP_ASSESSMENT",
            "data": assessment_data,
            "version": "1.0"
        }

        # Use organization_id as partition key
        self.producer.send(
            topic='gap-assessments',
            key=organization_id,
            value=report
        )

    def send_risk_assessment(self, organization_id: str,
                            risk_data: Dict[str, Any]) -> None:
        """Send risk assessment results."""

        report = {
            "reportId": str(uuid.uuid4()),
            "organizationId": organization_id,
            "timestamp": int(datetime.utcnow().timestamp() * 1000),
            "reportType": "RISK_ASSESSMENT",
            "riskScore": risk_data.get("overall_score"),
            "riskLevel": risk_data.get("risk_level"),
            "data": risk_data,
            "version": "1.0"
        }

        self.producer.send(
            topic='risk-assessments',
            key=organization_id,
            value=report
        )
